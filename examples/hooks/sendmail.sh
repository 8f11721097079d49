#!/bin/sh
# aq hook: mail a job's move or an alert through this machine's own `sendmail -t` (postfix,
# exim, opensmtpd, msmtp-mta, nullmailer... each installs one).
#
#   aq.yaml:
#     hooks:
#       on_stage: {review: AQ_MAIL_TO=you@example.com path/to/sendmail.sh}
#
# To: $AQ_MAIL_TO (default: the user aq runs as); From: $AQ_MAIL_FROM if set. The subject is the
# event's "text" line, the body that line and the event's JSON (read on stdin).
set -eu

event=$(cat)
to=${AQ_MAIL_TO:-$(id -un)}
# one line, however the event's reason was written, and RFC 2047-encoded when not ASCII
subject=$(printf '%s' "$event" | python3 -c '
import json, sys
from email.header import Header
text = json.load(sys.stdin).get("text") or "aq event"
print(Header(" ".join(str(text).split())[:200], "utf-8").encode())') || subject="aq: ${AQ_JOB_ID:-event}"
text=$(printf '%s' "$event" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("text", ""))' \
       2>/dev/null) || text=""
case "$to" in
  *"
"*) echo "sendmail.sh: AQ_MAIL_TO holds a line break; not sent" >&2; exit 2 ;;
esac

{
  printf 'To: %s\n' "$to"
  if [ -n "${AQ_MAIL_FROM:-}" ]; then printf 'From: %s\n' "$AQ_MAIL_FROM"; fi
  printf 'Subject: %s\n' "$subject"
  printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n'
  printf '\n%s\n\nThe event, as aq gave it:\n%s\n' "$text" "$event"
} | sendmail -t
