// The pod sandbox ("pause") program of the local node: no dependencies, built by
// hack/cluster.sh and packaged with `buildah from scratch`.
module modelworks.dev/hack/node/pause

go 1.24
