Kind = "service-intentions"
Name = "users"
Sources = [
  { Name = "orders", Action = "allow" },
  # REST at the edge through the gRPC-JSON transcoder.
  { Name = "edge", Action = "allow" },
]
