//go:build tools

// Package tools names the command scripts/install-kube-sim builds from this
// module, so that go.mod and go.sum cover everything it imports.
package tools

import _ "sigs.k8s.io/lws/cmd"
