Kind = "service-intentions"
Name = "auth"
Sources = [
  # token, discovery and JWKS for clients; ext_authz (token exchange) for every request
  { Name = "edge", Action = "allow" },
  # every service fetches the JWKS to verify internal tokens itself
  { Name = "orders", Action = "allow" },
  { Name = "users", Action = "allow" },
  { Name = "payments", Action = "allow" },
  { Name = "notifications", Action = "allow" },
  { Name = "web", Action = "allow" },
]
