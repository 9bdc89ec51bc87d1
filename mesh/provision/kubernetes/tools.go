//go:build tools

// Package tools pins Kubernetes' control plane as a dependency of this wrapper module so one
// `go build k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
// k8s.io/kubernetes/cmd/kube-scheduler` builds the pinned release, each package compiled once.

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
