// etcd for the API server tests, built from go.etcd.io/etcd/server at the version k8s.io/kubernetes uses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
