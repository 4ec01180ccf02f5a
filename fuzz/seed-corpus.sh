#!/usr/bin/env bash
# Seeds fuzz/corpus/ (git-ignored) from the repository's own data: the sample exports'
# rows in chunks of 8 physical lines for map_pipeline (its header is fixed), the error body
# forms of CONTRACT §5 for error_body (two status bytes first).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/map_pipeline corpus/error_body
for night in ../samples/crm-export-*.csv; do
    name=$(basename "$night" .csv)
    tail -n +2 "$night" | split -l 8 -d -a 3 - "corpus/map_pipeline/$name-"
done
i=0
while IFS= read -r body; do
    i=$((i + 1))
    # The status is 100 + (first two bytes as a little-endian u16) % 500: ",\001" is 400.
    printf ',\001%b' "$body" > "corpus/error_body/seed-$i"
done <<'BODIES'
• email address format invalid <br />• invalid status provided
β€’ email address format invalid \\<br />β€’ invalid status provided
• email address format invalid<br>• invalid status provided
{"message": "• email address format invalid <br />• invalid status provided"}
{"errors": ["email address format invalid", "invalid status provided"]}
{"errors": [{"message": "email address format invalid"}, {"message": "invalid status provided"}]}
email address format invalid\ninvalid status provided\n
email address format invalid\r\n\r\ninvalid status provided
{"error": "referralcode not configured"}
{"detail": "loyaltytier provided exceeds maximum length"}
&bull; the email is already in use
BODIES
printf '\220\001internal server error' > corpus/error_body/seed-500
echo "corpus: $(ls corpus/map_pipeline | wc -l) map_pipeline, $(ls corpus/error_body | wc -l) error_body seeds"
