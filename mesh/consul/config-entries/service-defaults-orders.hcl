Kind     = "service-defaults"
Name     = "orders"
Protocol = "http"
