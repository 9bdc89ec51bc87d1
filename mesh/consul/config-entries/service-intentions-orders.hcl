Kind = "service-intentions"
Name = "orders"
Sources = [
  {
    Name   = "edge"
    Action = "allow"
  },
  # the web BFF's order view, with the caller's token
  {
    Name   = "web"
    Action = "allow"
  },
]
