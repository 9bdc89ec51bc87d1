Kind     = "service-defaults"
Name     = "notifications"
Protocol = "http"
