Kind = "service-intentions"
Name = "payments"
Sources = [
  { Name = "orders", Action = "allow" },
  # REST at the edge through the gRPC-JSON transcoder.
  { Name = "edge", Action = "allow" },
]
