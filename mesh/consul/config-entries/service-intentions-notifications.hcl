Kind = "service-intentions"
Name = "notifications"
Sources = [
  # the WebSocket and the history API
  { Name = "edge", Action = "allow" },
  # order status changes (until the Kafka consumers deliver them)
  { Name = "orders", Action = "allow" },
]
