# Defaults for every Connect sidecar in the mesh.
Kind = "proxy-defaults"
Name = "global"
Config {
  # L7 (HTTP) by default: gives per-request retries, timeouts, stats and L7 intentions.
  protocol = "http"
}
