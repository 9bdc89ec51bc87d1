//go:build tools

// Package tools pins ghz as a dependency of this wrapper module so
// `go build github.com/bojand/ghz/cmd/ghz` builds the pinned release.

package tools

import _ "github.com/bojand/ghz/cmd/ghz"
