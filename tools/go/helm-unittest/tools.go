//go:build tools

// Package tools pins helm-unittest, built by tools/build-control-plane.sh.
package tools

import _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"
