Kind           = "service-resolver"
Name           = "payments"
# Fail fast on a dead endpoint so retries and outlier detection can act.
ConnectTimeout = "1s"
