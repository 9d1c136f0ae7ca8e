// Command rawwrite writes DirectoryUser objects the way usersync's Kubernetes
// store imports them, and nothing else: for each object a create (POST, field
// manager "usersync") and then a server-side apply of its status subresource
// (forced, conditional on the resourceVersion the create returned), with a fixed
// number of objects in flight. It gives the API server's own write ceiling for
// exactly those requests on the machine, against which bench/run.sh reports
// usersync's import. No planning, no directory, no watch.
//
//	rawwrite [--kubeconfig FILE] --namespace NS --workers 16 [--http1=false] -f OBJECTS.jsonl
//
// OBJECTS.jsonl holds one DirectoryUser a line, as `kubectl get -o json` shows
// it; the metadata other than name and labels is dropped, so that the bodies
// sent are those usersync sent. At the end one JSON line goes to stdout:
//
//	{"objects":10000,"writes":20000,"failed":0,"seconds":41.2,"writes_per_second":485.4}
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// fieldManager is the one usersync's store writes under.
const fieldManager = "usersync"

var users = schema.GroupVersionResource{Group: "usersync.dev", Version: "v1alpha1", Resource: "directoryusers"}

// result is the output line.
type result struct {
	Objects         int     `json:"objects"`
	Writes          int64   `json:"writes"`
	Failed          int64   `json:"failed"`
	Seconds         float64 `json:"seconds"`
	WritesPerSecond float64 `json:"writes_per_second"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	namespace := flag.String("namespace", "", "the namespace to write into (required)")
	workers := flag.Int("workers", 16, "objects in flight at once (usersync's store keeps 16)")
	file := flag.String("f", "", "DirectoryUser objects, one JSON object a line (required)")
	http1 := flag.Bool("http1", true, "HTTP/1.1 with a connection per request in flight, as usersync's client does; false: client-go's default, one HTTP/2 connection")
	flag.Parse()
	if *namespace == "" || *file == "" || *workers < 1 {
		fail(fmt.Errorf("--namespace and -f are required, and --workers must be at least 1"))
	}

	objects, err := readObjects(*file)
	if err != nil {
		fail(err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if *kubeconfig != "" {
		rules.ExplicitPath = *kubeconfig
	}
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		fail(fmt.Errorf("loading the kubeconfig: %w", err))
	}
	// No client-side rate limit: usersync's client has none either, so the
	// server's own ceiling is what is measured.
	config.QPS = -1
	if *http1 {
		config.NextProtos = []string{"http/1.1"}
	}
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		fail(err)
	}
	api := client.Resource(users).Namespace(*namespace)

	var writes, failed atomic.Int64
	work := make(chan *unstructured.Unstructured)
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for range *workers {
		wg.Go(func() {
			for obj := range work {
				n, err := write(ctx, api, obj)
				writes.Add(n)
				if err != nil {
					failed.Add(1)
					fmt.Fprintf(os.Stderr, "rawwrite: %s: %v\n", obj.GetName(), err)
				}
			}
		})
	}
	for _, obj := range objects {
		work <- obj
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	out := result{
		Objects:         len(objects),
		Writes:          writes.Load(),
		Failed:          failed.Load(),
		Seconds:         elapsed,
		WritesPerSecond: float64(writes.Load()) / elapsed,
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
	if out.Failed > 0 {
		os.Exit(1)
	}
}

// write creates one object and applies its status: the two requests of an
// import. It returns the requests that succeeded.
func write(ctx context.Context, api dynamic.ResourceInterface, obj *unstructured.Unstructured) (int64, error) {
	status, hasStatus := obj.Object["status"]
	spec := obj.DeepCopy()
	delete(spec.Object, "status")
	created, err := api.Create(ctx, spec, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	if !hasStatus {
		return 1, nil
	}
	patch := map[string]any{
		"apiVersion": obj.GetAPIVersion(),
		"kind":       obj.GetKind(),
		"metadata":   map[string]any{"name": obj.GetName(), "resourceVersion": created.GetResourceVersion()},
		"status":     status,
	}
	force := true
	if _, err := api.Apply(ctx, obj.GetName(), &unstructured.Unstructured{Object: patch},
		metav1.ApplyOptions{FieldManager: fieldManager, Force: force}, "status"); err != nil {
		return 1, fmt.Errorf("apply status: %w", err)
	}
	return 2, nil
}

// readObjects reads one object a line and keeps of its metadata only what
// usersync sends: the name and the labels.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var objects []*unstructured.Unstructured
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for scanner.Scan() {
		if len(scanner.Bytes()) == 0 {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &obj); err != nil {
			return nil, fmt.Errorf("%s, line %d: %w", path, len(objects)+1, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		labels := u.GetLabels()
		name := u.GetName()
		u.Object["metadata"] = map[string]any{}
		u.SetName(name)
		u.SetLabels(labels)
		objects = append(objects, u)
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	if len(objects) == 0 {
		return nil, fmt.Errorf("%s holds no objects", path)
	}
	return objects, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "rawwrite: %v\n", err)
	os.Exit(1)
}
