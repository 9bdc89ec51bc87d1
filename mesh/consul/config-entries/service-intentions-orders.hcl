Kind = "service-intentions"
Name = "orders"
Sources = [
  {
    Name   = "edge"
    Action = "allow"
  }
]
