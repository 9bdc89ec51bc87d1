Kind     = "service-defaults"
Name     = "auth"
Protocol = "http"
# auth's own sidecar waits this long for auth (Envoy's default: 15 s), for the one slow route,
# POST /auth/credentials (service-router-auth.hcl); the callers' sidecars and the edge keep
# their shorter timeouts for every other route.
LocalRequestTimeoutMs = 180000
