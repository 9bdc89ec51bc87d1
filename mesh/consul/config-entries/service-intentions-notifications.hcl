Kind = "service-intentions"
Name = "notifications"
Sources = [
  # the WebSocket and the history API (status changes arrive through Kafka)
  { Name = "edge", Action = "allow" },
]
