Kind     = "service-defaults"
Name     = "edge"
Protocol = "http"
