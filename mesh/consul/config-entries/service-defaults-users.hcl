Kind     = "service-defaults"
Name     = "users"
Protocol = "grpc"
