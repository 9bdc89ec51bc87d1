Kind     = "service-defaults"
Name     = "auth"
Protocol = "http"
