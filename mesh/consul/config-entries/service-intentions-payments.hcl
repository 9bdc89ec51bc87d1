Kind = "service-intentions"
Name = "payments"
Sources = [
  { Name = "orders", Action = "allow" },
  # REST at the edge through the gRPC-JSON transcoder.
  { Name = "edge", Action = "allow" },
  # the web BFF's order view (GetPayment, with the caller's token)
  { Name = "web", Action = "allow" },
]
