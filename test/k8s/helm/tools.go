//go:build tools

// Pins helm, built by test/k8s/build.sh for the chart's tests (a module of its own: helm's
// k8s.io/* library versions need not match kube-apiserver's).

package tools

import _ "helm.sh/helm/v4/cmd/helm"
