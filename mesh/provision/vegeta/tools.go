//go:build tools

// Package tools pins vegeta as a dependency of this wrapper module so
// `go build github.com/tsenart/vegeta/v12` builds the pinned release.

package tools

import _ "github.com/tsenart/vegeta/v12"
