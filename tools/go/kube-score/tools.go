//go:build tools

// Package tools pins kube-score, built by tools/build-control-plane.sh.
package tools

import _ "github.com/zegl/kube-score/cmd/kube-score"
