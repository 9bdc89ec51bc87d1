Kind     = "service-defaults"
Name     = "payments"
Protocol = "grpc"
