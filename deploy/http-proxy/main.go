// switchboard-http: the HTTP/JSON face of switchboard-control, a grpc-gateway
// reverse proxy generated from the google.api.http annotations in
// proto/switchboard/v1/control.proto.
//
// It holds no secrets. For Pusher-style signed requests it forwards what
// control needs to check the signature (method, path, raw query, MD5 of the
// raw body) as gRPC metadata; API keys pass through as `authorization` /
// `x-api-key`. Errors are JSON: {"error": "...", "code": <gRPC code>, "status":
// "<gRPC status name>"} with the
// matching HTTP status (400, 401, 404, 503, ...), except on Centrifugo's /api
// routes, which answer as Centrifugo does (centrifugo_api.go).
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	"github.com/grpc-ecosystem/grpc-gateway/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	switchboardv1 "switchboard/gen/v1"
)

const (
	maxAnswer     = 1 << 30 // the largest answer read from control
	maxBody       = 1 << 20
	mdPrefix      = "x-switchboard-http-"
	bodyMd5Header = "X-Switchboard-Internal-Body-Md5"
)

func writeError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"error": msg, "code": int(code), "status": statusName(code)})
}

// statusName is a gRPC code's canonical name ("INVALID_ARGUMENT"), as every
// other gRPC implementation and the CLI print it (Go's String() says
// "InvalidArgument").
func statusName(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func grpcError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	s, ok := status.FromError(err)
	if !ok {
		s = status.New(codes.Unknown, err.Error())
	}
	// gRPC reports an answer past a size limit as RESOURCE_EXHAUSTED, which
	// grpc-gateway would turn into 429 ("slow down"): it is not the caller's
	// rate, and retrying cannot help. A bad gateway, saying so.
	if s.Code() == codes.ResourceExhausted && strings.Contains(s.Message(), "larger than max") {
		msg := "control's answer is larger than this proxy reads: ask with page_size (" + s.Message() + ")"
		if isCentrifugoPath(r.URL.Path) {
			writeCentError(w, http.StatusBadGateway, centInternal, msg)
			return
		}
		writeError(w, http.StatusBadGateway, codes.ResourceExhausted, msg)
		return
	}
	if isCentrifugoPath(r.URL.Path) {
		httpStatus, code := centFromGrpc(s.Code())
		writeCentError(w, httpStatus, code, s.Message())
		return
	}
	writeError(w, runtime.HTTPStatusFromCode(s.Code()), s.Code(), s.Message())
}

func otherError(w http.ResponseWriter, r *http.Request, msg string, httpStatus int) {
	if isCentrifugoPath(r.URL.Path) {
		code := centBadRequest
		if httpStatus == http.StatusNotFound {
			code = centMethodNotFound
		}
		writeCentError(w, httpStatus, code, msg)
		return
	}
	code := codes.Unknown
	switch httpStatus {
	case http.StatusBadRequest:
		code = codes.InvalidArgument
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		code = codes.Unimplemented
	}
	writeError(w, httpStatus, code, msg)
}

// Headers that become gRPC metadata. Clients never get to set the proxy's own
// x-switchboard-http-* keys.
func headerMatcher(key string) (string, bool) {
	lower := strings.ToLower(key)
	switch {
	case lower == "x-api-key":
		return "x-api-key", true
	case strings.Contains(lower, "x-switchboard"):
		return "", false
	case lower == "x-request-id":
		return "x-request-id", true // the caller's own ID, kept in control's audit record
	}
	return runtime.DefaultHeaderMatcher(key)
}

// switchboard-http's own credential: control honours the x-switchboard-http-*
// metadata only next to it. From SWITCHBOARD_HTTP_PROXY_TOKEN (config:
// http_proxy_token), never from a flag (flags show in ps).
var proxyToken string

// What control needs to check a Pusher signature.
func requestMetadata(_ context.Context, r *http.Request) metadata.MD {
	return metadata.Pairs(
		"x-switchboard-proxy-token", proxyToken,
		mdPrefix+"method", r.Method,
		mdPrefix+"path", r.URL.Path,
		mdPrefix+"query", r.URL.RawQuery,
		mdPrefix+"body-md5", r.Header.Get(bodyMd5Header),
		mdPrefix+"client", clientHost(r.RemoteAddr),
	)
}

// The address part of a request's RemoteAddr (what control's audit trail
// records as the caller's address).
func clientHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// Bounds on what a request's path and query may carry: IDs are at most 256
// bytes (control checks that); a longer path would only reach control as
// oversized gRPC metadata and come back as an internal error.
const (
	maxPath  = 2048
	maxQuery = 4096
)

// Reads the body once (bounded), records its MD5, and hands it on unchanged.
// A path or query too long, or not UTF-8 (IDs are UTF-8 strings), is a 400
// with the reason, not an error from deeper down.
func withBodyMd5(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case len(r.URL.EscapedPath()) > maxPath:
			otherError(w, r, fmt.Sprintf("the path is longer than %d bytes (IDs are at most 256 bytes)", maxPath),
				http.StatusBadRequest)
			return
		case !utf8.ValidString(r.URL.Path):
			otherError(w, r, "the path is not valid UTF-8 (IDs are UTF-8 strings)", http.StatusBadRequest)
			return
		case len(r.URL.RawQuery) > maxQuery:
			otherError(w, r, fmt.Sprintf("the query is longer than %d bytes", maxQuery), http.StatusBadRequest)
			return
		}
		var body []byte
		if r.Body != nil {
			var err error
			body, err = ioutil.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				writeError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument, "request body too large or unreadable")
				return
			}
		}
		sum := md5.Sum(body)
		r.Header.Del(bodyMd5Header)
		r.Header.Set(bodyMd5Header, hex.EncodeToString(sum[:]))
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// retryUnstarted tries a call again (at most twice, within the caller's
// deadline) when control certainly did not run it: the replica was stopping
// (UNAVAILABLE and why), or there was no connection to it. A read-only call
// is also tried again when its replica cancelled it (gRPC C++ cancels a call
// that reaches a server whose shutdown has begun) or its connection broke
// during the call (the replica died). A TerminateUser or Disconnect cut that
// way is not tried again: control could have run it, and a second run would
// report the sessions closed by the first as not there.
func retryUnstarted(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	readOnly := strings.HasSuffix(method, "/UserConnections") || strings.HasSuffix(method, "/ListGateways") ||
		strings.HasSuffix(method, "/CentrifugoUserConnections") || strings.HasSuffix(method, "/CentrifugoInfo")
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || ctx.Err() != nil {
			return err
		}
		st := status.Convert(err)
		msg := st.Message()
		unstarted := st.Code() == codes.Unavailable && (strings.Contains(msg, "replica is stopping") ||
			strings.HasPrefix(msg, "connection error"))
		// A connection that broke during the call (the replica died): a read
		// is asked again; a command may have run, so its caller decides.
		cut := st.Code() == codes.Canceled || (st.Code() == codes.Unavailable && strings.Contains(msg, "transport is closing"))
		if !unstarted && !(readOnly && cut) {
			return err
		}
		if unstarted && attempt < 2 && !awaitControl(ctx, cc) {
			return err // control still unreachable: said as such (503), not as the wait's deadline
		}
	}
	return err
}

// lastBackoffReset: when a call last cut the channel's reconnect backoff
// short (unix nanoseconds), so that a burst of calls dials once.
var lastBackoffReset int64

// awaitControl: a call found no connection to control (refused while a
// replica restarts, or the channel waiting out its reconnect backoff, which
// fails every call at once): dial again now, and wait for the connection, up
// to 2 s or the call's own deadline; true once connected. Without it a
// request in the seconds after a control restart failed although control
// was back.
func awaitControl(ctx context.Context, cc *grpc.ClientConn) bool {
	now := time.Now().UnixNano()
	if last := atomic.LoadInt64(&lastBackoffReset); now-last > int64(250*time.Millisecond) &&
		atomic.CompareAndSwapInt64(&lastBackoffReset, last, now) {
		cc.ResetConnectBackoff()
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if s == connectivity.Shutdown {
			return false
		}
		if !cc.WaitForStateChange(wctx, s) {
			return false
		}
	}
	return true
}

// isPlaceholderSecret: a value this repository publishes (the dev defaults
// "…-change-me", the production examples' "REPLACE-with-…"); the same rule
// as control's and the gateway's (common/config.h IsPlaceholderSecret).
func isPlaceholderSecret(v string) bool {
	v = strings.ToLower(v)
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for _, marker := range []string{"change-me", "changeme", "change_me", "replace-with", "replace-me", "replace_me"} {
		for from := 0; ; {
			at := strings.Index(v[from:], marker)
			if at < 0 {
				break
			}
			at += from
			end := at + len(marker)
			if (at == 0 || !alnum(v[at-1])) && (end == len(v) || !alnum(v[end])) {
				return true // whole words only ("exchange-mechanism" is no placeholder)
			}
			from = at + 1
		}
	}
	return false
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP listen address (port 0: the OS chooses)")
	control := flag.String("control", "127.0.0.1:50051", "switchboard-control gRPC address")
	controlCA := flag.String("control_ca", "", "CA file: call control over TLS, verifying it (config tls.ca_file)")
	tlsCert := flag.String("tls_cert", "", "serve HTTPS with this certificate (and --tls_key)")
	tlsKey := flag.String("tls_key", "", "the key of --tls_cert")
	allReplicas := flag.Bool("control_all_replicas", false, "--control's host names every control replica "+
		"(a headless Service): balance over those whose gRPC health is SERVING, looking the name up again "+
		"every 2 s, so that a replica down or restarting fails no request")
	shutdownDelay := flag.Duration("shutdown_delay", 0, "on SIGTERM, keep serving this long with /readyz "+
		"answering 503 before closing (time for load balancers to take this pod out), e.g. 3s; at most 60s")
	operatorListen := flag.String("operator_listen", "", "host:port for the operator's endpoints: /metrics "+
		"(Prometheus), /livez, /readyz; never exposed with the API (port 0: the OS chooses)")
	dev := flag.Bool("dev", false, "dev mode: accept the placeholder token published with Switchboard "+
		"(scripts/run.sh); also SWITCHBOARD_DEV=1. Never in production")
	logFormat := flag.String("log_format", "text", "text|json: json is one object per line (ts in UTC, level, "+
		"component, msg), net/http's and grpc-go's lines included")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "switchboard-http [flags]: the HTTP/JSON API in front of "+
			"switchboard-control (README.md), with /metrics and /admin on --operator_listen\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *showVersion {
		fmt.Printf("switchboard-http %s\n", version)
		os.Exit(0)
	}
	if *logFormat != "text" && *logFormat != "json" {
		fmt.Fprintln(os.Stderr, "switchboard-http: --log_format must be text or json")
		os.Exit(2)
	}
	setupLogs(*logFormat)
	if *shutdownDelay < 0 || *shutdownDelay > time.Minute {
		fmt.Fprintln(os.Stderr, "switchboard-http: --shutdown_delay must be between 0 and 60s")
		os.Exit(2)
	}
	proxyToken = os.Getenv("SWITCHBOARD_HTTP_PROXY_TOKEN")
	if len(proxyToken) < 16 {
		fmt.Fprintln(os.Stderr, "switchboard-http: set SWITCHBOARD_HTTP_PROXY_TOKEN (at least 16 characters; control's http_proxy_token)")
		os.Exit(2)
	}
	if isPlaceholderSecret(proxyToken) {
		if !*dev && os.Getenv("SWITCHBOARD_DEV") != "1" {
			fmt.Fprintln(os.Stderr, "switchboard-http: SWITCHBOARD_HTTP_PROXY_TOKEN: a placeholder published with "+
				"Switchboard, refused outside dev mode: generate a real one (openssl rand -hex 32), or start with "+
				"--dev (SWITCHBOARD_DEV=1) for a local try-out")
			os.Exit(2)
		}
		log.Printf("dev mode: placeholder secrets accepted (SWITCHBOARD_HTTP_PROXY_TOKEN)")
	}

	runtime.HTTPError = grpcError
	runtime.OtherErrorHandler = otherError
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{OrigName: true, EmitDefaults: true}),
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		// Control's request ID for a command comes back as X-Request-Id (the
		// ID of its audit record and of every log line about it).
		runtime.WithOutgoingHeaderMatcher(func(key string) (string, bool) {
			if strings.ToLower(key) == "x-request-id" {
				return "X-Request-Id", true
			}
			return runtime.MetadataHeaderPrefix + key, true // grpc-gateway's default
		}),
		runtime.WithMetadata(requestMetadata),
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Control's answers for a user with many fat sessions run past gRPC's
	// default 4 MiB: read them (callers who want less ask with page_size).
	recv := grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAnswer))
	// Retries inside the metrics' view: each attempt is counted as control saw it.
	retry := grpc.WithChainUnaryInterceptor(retryUnstarted, grpc_prometheus.UnaryClientInterceptor)
	opts := []grpc.DialOption{grpc.WithInsecure(), recv, retry}
	if *controlCA != "" {
		creds, err := credentials.NewClientTLSFromFile(*controlCA, "")
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchboard-http: --control_ca: %v\n", err)
			os.Exit(2)
		}
		opts = []grpc.DialOption{grpc.WithTransportCredentials(creds), recv, retry}
	}
	target := *control
	if *allReplicas {
		if _, _, err := net.SplitHostPort(*control); err != nil {
			fmt.Fprintf(os.Stderr, "switchboard-http: --control %q: %v\n", *control, err)
			os.Exit(2)
		}
		resolver.Register(replicasBuilder{every: 2 * time.Second})
		target = replicasScheme + ":///" + *control
	}
	if err := switchboardv1.RegisterControlHandlerFromEndpoint(ctx, mux, target, opts); err != nil {
		log.Fatalf("switchboard-http: cannot register control handlers: %v", err)
	}

	// Probes: /livez while the process serves; /readyz while control answers
	// its gRPC health check with SERVING (checked per probe, 1 s deadline).
	healthConn, err := grpc.DialContext(ctx, target, opts...)
	if err != nil {
		log.Fatalf("switchboard-http: cannot dial control for health checks: %v", err)
	}
	defer healthConn.Close()
	health := healthpb.NewHealthClient(healthConn)
	live := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	}
	var stopping int32 // SIGTERM came: /readyz answers 503
	root := http.NewServeMux()
	root.HandleFunc("/livez", live)
	root.HandleFunc("/healthz", live)
	ready := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if atomic.LoadInt32(&stopping) != 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: stopping")
			return
		}
		checkCtx, done := context.WithTimeout(r.Context(), time.Second)
		defer done()
		resp, err := health.Check(checkCtx, &healthpb.HealthCheckRequest{})
		switch {
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: control %s unreachable: %v\n", *control, status.Convert(err).Message())
		case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: control %s is %s\n", *control, resp.GetStatus())
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	}
	root.HandleFunc("/readyz", ready)
	openapi, err := buildOpenAPI(version)
	if err != nil {
		log.Fatalf("switchboard-http: the OpenAPI document: %v", err)
	}
	root.HandleFunc("/openapi.json", openapiHandler(openapi))
	api := withBodyMd5(mux)
	root.Handle("/", api)
	// Centrifugo's API forms: /api (method/params), /api/batch, /api/<method>.
	centrifugo := &centrifugoAPI{inner: api}
	root.Handle("/api", centrifugo)
	root.Handle("/api/", centrifugo)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchboard-http: cannot listen on %s: %v\n", *listen, err)
		os.Exit(2)
	}
	srv := &http.Server{Handler: instrument(root), ErrorLog: log.New(log.Writer(), "", 0), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
	// The operator's listener: metrics and probes, apart from the API.
	var opSrv *http.Server
	opPort := 0
	if *operatorListen != "" {
		opLn, err := net.Listen("tcp", *operatorListen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchboard-http: cannot listen on --operator_listen %s: %v\n", *operatorListen, err)
			os.Exit(2)
		}
		op := http.NewServeMux()
		op.Handle("/metrics", metricsHandler())
		// The admin page, and the public API it calls (same origin).
		op.HandleFunc("/admin", adminHandler)
		op.HandleFunc("/admin/", adminHandler)
		op.Handle("/gateways", api)
		op.Handle("/apps/", api)
		op.HandleFunc("/livez", live)
		op.HandleFunc("/healthz", live)
		op.HandleFunc("/readyz", ready)
		op.HandleFunc("/openapi.json", openapiHandler(openapi))
		opSrv = &http.Server{Handler: instrument(op), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
		opPort = opLn.Addr().(*net.TCPAddr).Port
		go func() {
			if err := opSrv.Serve(opLn); err != nil && err != http.ErrServerClosed {
				log.Fatalf("switchboard-http: operator listener: %v", err)
			}
		}()
	}
	fmt.Printf("READY port=%d control=%s operator_port=%d\n", ln.Addr().(*net.TCPAddr).Port, *control, opPort)
	log.Printf("switchboard-http %s: the API on %s, operator endpoints on port %d, control at %s", version,
		ln.Addr(), opPort, *control)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		atomic.StoreInt32(&stopping, 1)
		time.Sleep(*shutdownDelay)
		shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = srv.Shutdown(shutdownCtx)
		if opSrv != nil {
			_ = opSrv.Shutdown(shutdownCtx)
		}
	}()
	var serveErr error
	if *tlsCert != "" {
		serveErr = srv.ServeTLS(ln, *tlsCert, *tlsKey)
	} else {
		serveErr = srv.Serve(ln)
	}
	if err := serveErr; err != nil && err != http.ErrServerClosed {
		log.Fatalf("switchboard-http: %v", err)
	}
}
