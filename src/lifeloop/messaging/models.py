"""Tables of outbound messaging: templates, channel configurations, outbox, deliveries, consent."""
