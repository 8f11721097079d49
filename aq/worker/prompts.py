"""What an attempt's engine is told: the persona, the job's body and, on a retry, what went
wrong last time; or, resuming the agent's own session, only what went wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aq.core.usage import Usage
from aq.infra.engines import EngineSpec
from aq.infra.rundir import RunFiles
from aq.worker.attemptlog import AttemptLog
from aq.worker.plan import AttemptPlan


@dataclass(frozen=True, slots=True)
class Prompt:
    told: str  # what the agent is told: persona, body, the last failure (or, resuming, that)
    text: str  # what the engine reads: `told`, or the body alone (input: body)
    session: str | None  # the agent session resumed, if any
    resumed: Usage | None  # that session's usage before this run


def engine_prompt(plan: AttemptPlan, spec: EngineSpec, cwd: Path, log: AttemptLog,
                  files: RunFiles, env: dict[str, str]) -> Prompt | str:
    """The attempt's prompt, written into its run folder (AQ_PROMPT_FILE in `env`, and the last
    failure's AQ_PREVIOUS_FAILURE_FILE); a string: why it could not be written."""
    resumed, session = resumable(plan, spec, cwd, log)
    told = resume_prompt(plan) if session else build_prompt(plan)
    text = plan.manifest.body if spec.input == "body" else told
    env["AQ_PROMPT_FILE"] = str(files.prompt)
    try:
        files.prompt.write_text(text, encoding="utf-8")
        if plan.previous_failure:
            files.previous_failure.write_text(plan.previous_failure, encoding="utf-8")
            env["AQ_PREVIOUS_FAILURE_FILE"] = str(files.previous_failure)
    except OSError as err:
        return f"could not write the prompt into {plan.run_dir}: {err.strerror or err}"
    return Prompt(told, text, session, resumed)


def build_prompt(plan: AttemptPlan) -> str:
    """Persona, then the job body, then (on a retry) what went wrong last time."""
    parts = []
    if plan.persona:
        parts.append(plan.persona.strip())
    parts.append(plan.manifest.body.strip())
    if plan.previous_failure:
        parts.append(
            "The previous attempt at this job failed. The end of its output:\n\n```\n"
            + plan.previous_failure.strip() + "\n```\n\nFix the cause of that failure."
        )
    return "\n\n---\n\n".join(parts) + "\n"


def resumable(plan: AttemptPlan, spec: EngineSpec, cwd: Path, log: AttemptLog
              ) -> tuple[Usage | None, str | None]:
    """The earlier run's usage and session to resume, when this engine can and the session
    lives in this attempt's folder; else a fresh session (said in the log)."""
    if plan.resume is None or not spec.can_resume:
        return None, None
    usage, where = plan.resume
    if where and Path(where) != cwd:
        log.note(f"not resuming session {usage.session}: it ran in {where}, this attempt runs in "
                 f"{cwd}; a fresh session gets the failure instead")
        return None, None
    return usage, usage.session


def resume_prompt(plan: AttemptPlan) -> str:
    """The prompt of a resumed session: the agent remembers the job; tell it what failed."""
    if not plan.previous_failure:
        return build_prompt(plan)
    return ("Your previous attempt at this job failed. The end of its output:\n\n```\n"
            + plan.previous_failure.strip() + "\n```\n\nFix the cause of that failure.\n")
