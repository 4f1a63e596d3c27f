# Step 1, "Send SMS": the step input (JSON) is the first argument and stdin; the output is the
# JSON printed on stdout. A real step would call an SMS provider here.
set -eu
PATH=/bin
input=$(busybox cat)
phone=$(printf '%s' "$input" | busybox sed -n 's/.*"phone":"\([^"]*\)".*/\1/p')
if [ -z "$phone" ]; then
  # No phone number: fail without retrying (a 4xx status is not retried).
  echo '{"status": 422, "error": "the user has no phone number", "retry": false}'
  exit 0
fi
echo "dispatching a welcome SMS to $phone from container $(busybox hostname)" >&2
printf '{"sms": {"to": "%s", "status": "queued", "via": "docker", "attempt": "%s"}}\n' \
  "$phone" "${WEIR_ATTEMPT:-?}"
