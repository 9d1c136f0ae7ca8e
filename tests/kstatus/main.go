// Command kstatus prints the health that kstatus computes for Kubernetes
// objects: the real sigs.k8s.io/cli-utils/pkg/kstatus/status library, with
// which kpt and cli-utils (and Flux, through its fork github.com/fluxcd/cli-utils)
// decide whether an applied object is ready. usersync's end-to-end tests use it
// to check how GitOps tools read its resources. Built by tests/kstatus.sh; see
// README.md.
//
//	kstatus [--kubeconfig FILE] TYPE/NAMESPACE/NAME...
//	kstatus -f FILE|-
//
// TYPE is what kubectl accepts: a kind, a resource name or a short name,
// optionally with its group (ConnectorHealth, conn, connectorhealths.usersync.dev).
// NAMESPACE is empty for a cluster-scoped object (TYPE//NAME). With -f the
// objects are JSON (one after the other, or a List) read from FILE or stdin.
//
// For each object it prints one JSON line, in the order given:
//
//	{"status":"InProgress","message":"ConnectorHealth generation is 1, but latest observed generation is 0"}
//
// status is a kstatus status (InProgress, Failed, Current, Terminating,
// Unknown), or NotFound for a live object that does not exist. Any other
// error ends the command with exit status 1 and a message on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is one output line.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	file := flag.String("f", "", "read JSON objects from this file (- for stdin) instead of the API server")
	timeout := flag.Duration("timeout", 30*time.Second, "time limit for all requests to the API server")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: kstatus [--kubeconfig FILE] TYPE/NAMESPACE/NAME...\n       kstatus -f FILE|-\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	emit := func(v verdict) {
		if err := out.Encode(v); err != nil {
			fail(err)
		}
	}
	switch {
	case *file != "" && flag.NArg() == 0:
		objects, err := readObjects(*file)
		if err != nil {
			fail(err)
		}
		for _, u := range objects {
			emit(compute(u))
		}
	case *file == "" && flag.NArg() > 0:
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		live, err := newLive(*kubeconfig)
		if err != nil {
			fail(err)
		}
		for _, ref := range flag.Args() {
			v, err := live.verdict(ctx, ref)
			if err != nil {
				fail(fmt.Errorf("%s: %w", ref, err))
			}
			emit(v)
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
	os.Exit(1)
}

// compute is kstatus's verdict on one object.
func compute(u *unstructured.Unstructured) verdict {
	res, err := status.Compute(u)
	if err != nil {
		// Compute fails on a malformed field (observedGeneration not an
		// integer, say); kstatus's own pollers report that as Unknown.
		return verdict{Status: status.UnknownStatus.String(), Message: err.Error()}
	}
	return verdict{Status: res.Status.String(), Message: res.Message}
}

// readObjects decodes a stream of JSON objects, expanding Lists into their items.
func readObjects(name string) ([]*unstructured.Unstructured, error) {
	var in io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	dec := json.NewDecoder(in)
	var objects []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, err
		}
		// UnmarshalJSON keeps integers as int64, which kstatus's field lookups need.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		if !u.IsList() {
			objects = append(objects, u)
			continue
		}
		err := u.EachListItem(func(item runtime.Object) error {
			objects = append(objects, item.(*unstructured.Unstructured))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
}

// live reads objects from an API server.
type live struct {
	mapper meta.RESTMapper
	client dynamic.Interface
}

func newLive(kubeconfig string) (*live, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		return nil, err
	}
	cached := memory.NewMemCacheClient(disco)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &live{mapper: mapper, client: client}, nil
}

func (l *live) verdict(ctx context.Context, ref string) (verdict, error) {
	parts := strings.Split(ref, "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return verdict{}, fmt.Errorf("want TYPE/NAMESPACE/NAME (TYPE//NAME for a cluster-scoped object)")
	}
	kind, namespace, name := parts[0], parts[1], parts[2]
	mapping, err := l.mappingFor(kind)
	if err != nil {
		return verdict{}, err
	}
	resource := l.client.Resource(mapping.Resource)
	var get dynamic.ResourceInterface = resource
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if namespace == "" {
			return verdict{}, fmt.Errorf("%s is namespaced: give a namespace", mapping.GroupVersionKind.Kind)
		}
		get = resource.Namespace(namespace)
	}
	u, err := get.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return verdict{Status: status.NotFoundStatus.String(), Message: err.Error()}, nil
	}
	if err != nil {
		return verdict{}, err
	}
	return compute(u), nil
}

// mappingFor resolves TYPE as kubectl does: a resource (plural, singular or
// short name, optionally resource.version.group), else a kind (Kind.version.group).
func (l *live) mappingFor(arg string) (*meta.RESTMapping, error) {
	gvr, gr := schema.ParseResourceArg(arg)
	var gvk schema.GroupVersionKind
	if gvr != nil {
		gvk, _ = l.mapper.KindFor(*gvr)
	}
	if gvk.Empty() {
		gvk, _ = l.mapper.KindFor(gr.WithVersion(""))
	}
	if !gvk.Empty() {
		return l.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	fullGVK, gk := schema.ParseKindArg(arg)
	if fullGVK != nil {
		if m, err := l.mapper.RESTMapping(fullGVK.GroupKind(), fullGVK.Version); err == nil {
			return m, nil
		}
	}
	m, err := l.mapper.RESTMapping(gk)
	if err != nil {
		return nil, fmt.Errorf("the server has no resource type %q: %w", arg, err)
	}
	return m, nil
}
