#!/bin/sh
# aq hook: a desktop notification (notify-send, from libnotify) of a job's move or an alert.
#
#   aq.yaml:
#     hooks:
#       on_stage: {failed: path/to/notify-send.sh, dead_letter: path/to/notify-send.sh}
#       on_alert: path/to/notify-send.sh
#
# Reads the event's JSON on stdin and shows its "text" line; failed, dead_letter and alerts are
# shown as critical. On a machine with no desktop session notify-send fails, and aq reports it
# in one line: the move stands.
set -eu

event=$(cat)
text=$(printf '%s' "$event" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("text", ""))' \
       2>/dev/null) || text=""
[ -n "$text" ] || text="aq: ${AQ_JOB_ID:-?} moved to ${AQ_STAGE:-?}"

case "${AQ_STAGE:-}" in
  failed|dead_letter) urgency=critical ;;
  *) urgency=normal ;;
esac
if [ "${AQ_HOOK:-}" = on_alert ]; then
  urgency=critical
  summary="aq alert: ${AQ_ALERT:-alert}"
else
  summary="aq: ${AQ_JOB_ID:-job} -> ${AQ_STAGE:-?}"
fi

exec notify-send --app-name=aq --urgency="$urgency" "$summary" "$text"
