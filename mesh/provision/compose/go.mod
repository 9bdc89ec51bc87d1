module shopmesh.local/compose-schema

go 1.23

// The compose-spec loader `docker compose` v2.40.3 validates with; its embedded
// schema/compose-spec.json is what the compose.yaml test checks against.
require github.com/compose-spec/compose-go/v2 v2.9.1
