Kind = "service-intentions"
Name = "notifications"
Sources = [
  # the WebSocket and the history API (status changes arrive through Kafka)
  { Name = "edge", Action = "allow" },
  # the web BFF's order view (history, with the caller's token)
  { Name = "web", Action = "allow" },
]
