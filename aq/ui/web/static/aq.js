// aq web: live updates (Server-Sent Events), board filter, moves as POSTs with the CSRF value,
// and a running attempt's log streamed. No framework, no build step.
"use strict";
const csrf = document.querySelector('meta[name="aq-csrf"]').content;

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text; box.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// --- live: reload the live part of the page when the queue's change count moves ----------
function startLive() {
  const part = document.body.dataset.live;
  const state = document.getElementById("live-state");
  const source = new EventSource("/live");
  let seen = document.querySelector('meta[name="aq-version"]').content;
  source.addEventListener("version", (e) => {
    state.classList.add("on");
    if (e.data === seen) return;
    seen = e.data;
    if (part) refresh(part); else location.reload();
  });
  source.onerror = () => state.classList.remove("on");
}

async function refresh(url) {
  const answer = await fetch(url, {headers: {"accept": "text/html"}});
  if (!answer.ok) return;
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = page.getElementById("live-part") || page.body;
  const here = document.getElementById("live-part");
  const oldLog = document.getElementById("log");
  here.innerHTML = fresh.innerHTML;
  const newLog = document.getElementById("log");
  if (oldLog && newLog && oldLog.dataset.streaming && oldLog.dataset.stream === newLog.dataset.stream) {
    newLog.replaceWith(oldLog);  // keep a stream that is still reading
  } else if (newLog) { startLog(newLog); }
  bindActions(); applyFilter();
}

// --- the board's filter ---------------------------------------------------------------------
function applyFilter() {
  const box = document.getElementById("filter");
  if (!box) return;
  const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const card of document.querySelectorAll(".card")) {
    const text = card.dataset.text || "";
    card.hidden = !words.every((w) => text.includes(w));
  }
}

// --- moves ------------------------------------------------------------------------------------
function bindActions() {
  for (const button of document.querySelectorAll("button.act")) {
    button.onclick = () => act(button);
  }
}

async function act(button) {
  const body = {};
  if (button.dataset.ask) {
    const reason = prompt(button.dataset.ask);
    if (reason === null) return;
    body.reason = reason;
  } else if (button.dataset.confirm && !confirm(button.dataset.confirm)) {
    return;
  }
  if (button.dataset.scope) body.allow_out_of_scope = true;
  const refusal = document.getElementById("refusal");
  button.disabled = true;
  try {
    const answer = await fetch(`/jobs/${encodeURIComponent(button.dataset.job)}/${button.dataset.action}`, {
      method: "POST", headers: {"content-type": "application/json", "x-aq-csrf": csrf},
      body: JSON.stringify(body),
    });
    const said = await answer.json().catch(() => ({error: `the server answered ${answer.status}`}));
    if (said.ok) {
      if (refusal) refusal.hidden = true;
      toast(said.message + (said.tracker && said.tracker.length ? ` (${said.tracker.join("; ")})` : ""));
      const part = document.body.dataset.live;
      if (part) await refresh(part);
    } else if (refusal) {
      refusal.textContent = "aq: " + said.error; refusal.hidden = false;
    } else { toast("aq: " + said.error); }
  } finally { button.disabled = false; }
}

// --- a log: what is kept, or a running attempt's lines as they are written ------------------
async function startLog(pre) {
  if (pre.dataset.stream) {
    pre.textContent = ""; pre.dataset.streaming = "1";
    const source = new EventSource(pre.dataset.stream);
    source.addEventListener("log", (e) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += JSON.parse(e.data);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", () => { source.close(); delete pre.dataset.streaming; });
    source.onerror = () => {
      // not there yet (the attempt is starting) or not here (it runs on another machine):
      // say what the server says, and look again in a few seconds while the job builds
      source.close(); delete pre.dataset.streaming; loadLog(pre);
      const tries = Number(pre.dataset.tries || 0);
      if (tries < 40) { pre.dataset.tries = tries + 1; setTimeout(() => { if (pre.isConnected) startLog(pre); }, 3000); }
    };
  } else { loadLog(pre); }
}

async function loadLog(pre) {
  const answer = await fetch(pre.dataset.src);
  pre.textContent = await answer.text();
}

document.addEventListener("DOMContentLoaded", () => {
  startLive(); bindActions();
  document.getElementById("refresh").onclick = async () => {
    await fetch("/refresh", {method: "POST", headers: {"x-aq-csrf": csrf}});
    toast("fetching the remote");
  };
  const box = document.getElementById("filter");
  if (box) box.addEventListener("input", applyFilter);
  const log = document.getElementById("log");
  if (log) startLog(log);
  for (const form of document.querySelectorAll("form.post")) {
    form.addEventListener("submit", (e) => { e.preventDefault(); postForm(form); });
  }
});

// a small form whose fields go as JSON (halt with a reason, resume)
async function postForm(form) {
  const body = Object.fromEntries(new FormData(form).entries());
  const answer = await fetch(form.action, {
    method: "POST", headers: {"content-type": "application/json", "x-aq-csrf": csrf},
    body: JSON.stringify(body),
  });
  const said = await answer.json().catch(() => ({error: `the server answered ${answer.status}`}));
  if (said.ok) location.reload(); else toast("aq: " + said.error);
}
