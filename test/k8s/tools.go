//go:build tools

// Pins the upstream commands the tests build (kube-apiserver; kube-proxy for a later comparison).

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
