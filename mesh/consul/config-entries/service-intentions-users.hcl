Kind = "service-intentions"
Name = "users"
Sources = [
  { Name = "orders", Action = "allow" },
  # the password grant and the token exchange look the user up
  { Name = "auth", Action = "allow" },
  # REST at the edge through the gRPC-JSON transcoder.
  { Name = "edge", Action = "allow" },
  # the web BFF's admin view: block a user, with the admin's token
  { Name = "web", Action = "allow" },
]
