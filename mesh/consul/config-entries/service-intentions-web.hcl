Kind = "service-intentions"
Name = "web"
Sources = [
  # the page, its scripts and the BFF, through the edge only
  { Name = "edge", Action = "allow" },
]
