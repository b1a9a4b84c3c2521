//go:build tools

// Package tools pins SeaweedFS's weed command in go.mod (hack/cluster.sh build seaweedfs).
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
