// Command testcluster runs a throw-away Kubernetes control plane in a single
// process, for integration tests:
//
//   - etcd, embedded (go.etcd.io/etcd/server/v3/embed);
//   - the real kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver/app);
//   - the kube-controller-manager, limited by default to the garbage
//     collector and the namespace controller, so that ownerReferences cascade
//     and deleted namespaces really go away, plus the ClusterRole aggregation
//     controller so that the built-in admin/edit/view roles have rules.
//
// There is no scheduler and no kubelet: Pods are stored but never run.
//
// Everything listens on 127.0.0.1 only. The admin kubeconfig is written to
// <dir>/kubeconfig once /readyz answers 200, and removed again on shutdown,
// so its presence means "ready".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1" // first address of serviceCIDR: the "kubernetes" Service
	issuer      = "https://kubernetes.default.svc.cluster.local"
)

// repeated collects a flag given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

type config struct {
	dir            string
	port           int
	logFile        string
	controllers    string
	readyTimeout   time.Duration
	apiserverArgs  repeated
	controllerArgs repeated
}

func main() {
	var c config
	flag.StringVar(&c.dir, "dir", "", "state directory: PKI, etcd data, log and kubeconfig (required)")
	flag.IntVar(&c.port, "port", 0, "kube-apiserver port on 127.0.0.1; 0 picks a free one")
	flag.StringVar(&c.logFile, "log-file", "", `log file (default <dir>/controlplane.log; "-" keeps stderr)`)
	// The aggregation controller fills the built-in admin/edit/view
	// ClusterRoles, which are empty without it.
	flag.StringVar(&c.controllers, "controllers",
		"garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller",
		"kube-controller-manager --controllers value")
	flag.DurationVar(&c.readyTimeout, "ready-timeout", 3*time.Minute, "give up if the apiserver is not ready by then")
	flag.Var(&c.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--v=2 (repeatable)")
	flag.Var(&c.controllerArgs, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	flag.Parse()
	if c.dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: testcluster --dir DIR [--port N] [flags]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if err := run(c); err != nil {
		klog.ErrorS(err, "control plane failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(c config) error {
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := redirectOutput(c.logFile, filepath.Join(dir, "controlplane.log")); err != nil {
		return err
	}
	// A kubeconfig left by a killed run must not look like "ready".
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.Remove(kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	certs := newPKI(filepath.Join(dir, "pki"))
	if err := certs.ensure(); err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(dir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	// etcd is closed last, after the apiserver has drained.
	defer etcd.Close()

	// Listening before the apiserver starts hands it the socket and tells us
	// the port, with no window in which another process could take it.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)))
	if err != nil {
		return fmt.Errorf("listening for kube-apiserver: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	server := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	// Each component gets its own cancelable context so that shutdown can go
	// in order: controllers first, then the apiserver, then etcd.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	apiDone := make(chan error, 1)
	if err := startAPIServer(apiCtx, apiDone, ln, port, etcdURL, certs, c.apiserverArgs); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}

	if err := waitReady(ctx, server, certs, c.readyTimeout, apiDone, etcd.Err()); err != nil {
		return err
	}

	kcmCtx, stopKCM := context.WithCancel(context.Background())
	defer stopKCM()
	kcmDone := make(chan error, 1)
	if err := certs.writeKubeconfig(certs.kcmKubeconfig, server, certs.kcmCert, certs.kcmKey); err != nil {
		return err
	}
	if err := startControllerManager(kcmCtx, kcmDone, certs.kcmKubeconfig, c.controllers, c.controllerArgs); err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}

	if err := certs.writeKubeconfig(kubeconfig, server, certs.adminCert, certs.adminKey); err != nil {
		return err
	}
	defer os.Remove(kubeconfig)
	klog.InfoS("control plane ready", "server", server, "kubeconfig", kubeconfig)

	var failure error
	select {
	case <-ctx.Done():
		klog.InfoS("signal received, shutting down")
	case err := <-apiDone:
		failure = fmt.Errorf("kube-apiserver stopped: %w", err)
	case err := <-kcmDone:
		failure = fmt.Errorf("kube-controller-manager stopped: %w", err)
	case err := <-etcd.Err():
		failure = fmt.Errorf("etcd stopped: %w", err)
	}
	os.Remove(kubeconfig)

	// Bounded, ordered shutdown; a second signal or the deadline aborts it.
	stop()
	abort, cancelAbort := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancelAbort()
	abort, cancelDeadline := context.WithTimeout(abort, 30*time.Second)
	defer cancelDeadline()
	stopKCM()
	waitStopped(abort, "kube-controller-manager", kcmDone)
	stopAPI()
	waitStopped(abort, "kube-apiserver", apiDone)
	return failure
}

// redirectOutput points stdout and stderr (klog, etcd's zap logger, panics)
// at the log file, so that one file has everything about this cluster.
func redirectOutput(flagValue, def string) error {
	if flagValue == "-" {
		return nil
	}
	if flagValue == "" {
		flagValue = def
	}
	f, err := os.OpenFile(flagValue, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	for _, fd := range []int{1, 2} {
		if err := unix.Dup2(int(f.Fd()), fd); err != nil {
			return err
		}
	}
	return f.Close()
}

func waitStopped(ctx context.Context, name string, done <-chan error) {
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			klog.ErrorS(err, "stopped with error", "component", name)
		}
	case <-ctx.Done():
		klog.InfoS("not waiting any longer for shutdown", "component", name)
	}
}

// freePort asks the kernel for an unused loopback port. etcd's embed API
// wants URLs rather than listeners, so there is a tiny race here, which is
// acceptable for a test cluster.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dataDir string) (*embed.Etcd, string, error) {
	clientPort, err1 := freePort()
	peerPort, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "usersync-test"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}
	// Test data is disposable: skipping fsync makes every write (and so
	// every test) faster, notably on VMs with slow disk flushes.
	cfg.UnsafeNoFsync = true
	// Keep fewer raft entries in memory between snapshots (default 10000);
	// this cluster has little data and should stay small.
	cfg.SnapshotCount = 5000
	// Compact old revisions hourly so a long-running dev cluster stays small.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	// No gRPC gateway (HTTP/JSON proxy): nothing here uses it.
	cfg.EnableGRPCGateway = false

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, clientURL.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(time.Minute):
		e.Close()
		return nil, "", errors.New("etcd did not become ready within a minute")
	}
}

func startAPIServer(ctx context.Context, done chan<- error, ln net.Listener, port int, etcdURL string, certs *pki, extra []string) error {
	s := apiserveroptions.NewServerRunOptions()
	fs := flagSet("kube-apiserver", s.Flags().FlagSets)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		// The "kubernetes" Service normally gets the apiserver's address as
		// its endpoint; loopback addresses are invalid there, and nothing in
		// this cluster can reach a Service anyway.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cert-dir=" + certs.dir,
		"--tls-cert-file=" + certs.serverCert,
		"--tls-private-key-file=" + certs.serverKey,
		"--client-ca-file=" + certs.caCert,
		// Service-account tokens (TokenRequest, `kubectl create token`) need
		// an issuer and a signing key.
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + certs.saPub,
		"--service-account-signing-key-file=" + certs.saKey,
		"--authorization-mode=RBAC",
		"--profiling=false",
	}
	if err := fs.Parse(append(args, extra...)); err != nil {
		return err
	}
	// Hand over our listener: BindPort must still be set for validation.
	s.SecureServing.Listener = ln

	// What the kube-apiserver command does in PersistentPreRunE/RunE.
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	featureGate.(featuregate.MutableFeatureGate).AddMetrics()
	s.GenericServerRunOptions.ComponentGlobalsRegistry.AddMetrics()
	go func() { done <- apiserverapp.Run(ctx, completed) }()
	return nil
}

func startControllerManager(ctx context.Context, done chan<- error, kubeconfig, controllers string, extra []string) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	known, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	named := s.Flags(known, disabled, aliases)
	s.ParsedFlags = &named
	fs := flagSet("kube-controller-manager", named.FlagSets)
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + controllers,
		// One instance only: leader election would just add lease traffic.
		"--leader-elect=false",
		// No HTTPS endpoint of its own: nothing scrapes it, and it would
		// need another port plus delegated authentication.
		"--secure-port=0",
		// Controllers act with the manager's own (system:masters) identity
		// instead of per-controller service accounts.
		"--use-service-account-credentials=false",
	}
	if err := fs.Parse(append(args, extra...)); err != nil {
		return err
	}
	// Unlike the real command, do not call ComponentGlobalsRegistry.Set or
	// logsapi.ValidateAndApply here: feature gates, versions and logging are
	// process-wide and were already set up for the apiserver.
	cfg, err := s.Config(ctx, known, disabled, aliases)
	if err != nil {
		return err
	}
	go func() { done <- kcmapp.Run(ctx, cfg.Complete()) }()
	return nil
}

// waitReady polls /readyz as the admin until it answers 200.
func waitReady(ctx context.Context, server string, certs *pki, timeout time.Duration, apiDone <-chan error, etcdErr <-chan error) error {
	tlsConfig, err := certs.adminTLS()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	deadline := time.After(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return errors.New("interrupted before the apiserver was ready")
		case err := <-apiDone:
			return fmt.Errorf("kube-apiserver stopped before it was ready: %w", err)
		case err := <-etcdErr:
			return fmt.Errorf("etcd stopped before the apiserver was ready: %w", err)
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after %s", timeout)
		case <-tick.C:
			resp, err := client.Get(server + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
	}
}
