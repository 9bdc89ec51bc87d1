//go:build tools

// Package tools pins Jaeger v2 as a dependency of this wrapper module so
// `go build github.com/jaegertracing/jaeger/cmd/jaeger` builds the pinned release.

package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
