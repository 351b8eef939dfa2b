//go:build tools

// Package tools pins etcd's server, built by tools/build-control-plane.sh.
package tools

import _ "go.etcd.io/etcd/server/v3"
