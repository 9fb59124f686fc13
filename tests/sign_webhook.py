"""Signs a webhook with the Standard Webhooks reference library.

usage: sign_webhook.py SECRET MSG_ID UNIX_SECONDS BODY
prints the three headers as a JSON object.
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

secret, msg_id, seconds, body = sys.argv[1:5]
when = datetime.fromtimestamp(int(seconds), tz=timezone.utc)
signature = Webhook(secret).sign(msg_id, when, body)
print(json.dumps({
    "webhook-id": msg_id,
    "webhook-timestamp": seconds,
    "webhook-signature": signature,
}))
