//! Turns a webhook delivery into messages: one per event, the body being
//! one JSON event or an array of them. The host has already checked the
//! delivery's signature on the raw body, so this only maps.

mod mapping;

use switchyard_sdk::{Connector, ConnectorInfo, Error, Message, Role, WebhookRequest, config};

struct WebhookReceiver;

impl Connector for WebhookReceiver {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("webhook-receiver", env!("CARGO_PKG_VERSION"))
            .description(
                "Turns JSON webhooks into messages on stream `stream` (default `events`) or the one named by each event's `stream_from` field",
            )
            .role(Role::Webhook)
    }

    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Message>, Error> {
        let routing = mapping::Routing {
            stream: config::get("stream")
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "events".to_owned()),
            stream_from: config::get("stream_from").filter(|field| !field.is_empty()),
        };
        mapping::to_messages(&request, &routing).map_err(Error::invalid_input)
    }
}

switchyard_sdk::export!(WebhookReceiver);

#[cfg(test)]
mod tests {
    #[test]
    fn describes_the_webhook_role() {
        let info = super::__switchyard_describe();
        assert_eq!(info.name, "webhook-receiver");
        assert_eq!(info.roles, [switchyard_sdk::Role::Webhook]);
    }
}
