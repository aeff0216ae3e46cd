// Command httpserver is a small JSON service built with fx, net/http and
// fxcqrs:
//
//	POST /orders          places an order (Exec)     {"item":"keyboard","qty":2}
//	GET  /orders/{id}     reads an order (Send)
//	GET  /orders/stream   streams every order as server-sent events (Stream)
//
// Stopping it (Ctrl-C) shuts the HTTP server down first, then the
// mediator, which drains the events of requests still in flight.
//
//	go run ./examples/httpserver -addr 127.0.0.1:8080
//	curl -d '{"item":"keyboard","qty":2}' localhost:8080/orders
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"iter"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Messages.
type (
	PlaceOrder struct {
		ID   int
		Item string
		Qty  int
	}
	GetOrder    struct{ ID int }
	WatchOrders struct{}
	OrderPlaced struct{ ID int }
	OrderViewed struct{ ID int }
)

// Order is the read model.
type Order struct {
	ID     int    `json:"id"`
	Item   string `json:"item"`
	Qty    int    `json:"qty"`
	Status string `json:"status"`
}

// Store is an in-memory order store.
type Store struct {
	mu     sync.Mutex
	nextID int
	orders map[int]Order
	views  map[int]int
}

func NewStore() *Store { return &Store{orders: map[int]Order{}, views: map[int]int{}} }

func (s *Store) newID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return s.nextID
}

func (s *Store) put(o Order) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orders[o.ID] = o
}

func (s *Store) get(id int) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	return o, ok
}

func (s *Store) all() []Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Order, 0, len(s.orders))
	for _, o := range s.orders {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Order) int { return a.ID - b.ID })
	return out
}

// Handlers.

type placeOrder struct{ store *Store }

func (h placeOrder) Handle(ctx context.Context, c PlaceOrder) error {
	if c.Qty <= 0 {
		return errBadRequest("qty must be positive")
	}
	h.store.put(Order{ID: c.ID, Item: c.Item, Qty: c.Qty, Status: "placed"})
	fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
	return nil
}

type getOrder struct{ store *Store }

func (h getOrder) Handle(_ context.Context, q GetOrder) (Order, error) {
	o, ok := h.store.get(q.ID)
	if !ok {
		return Order{}, errNotFound
	}
	return o, nil
}

type watchOrders struct{ store *Store }

func (h watchOrders) Handle(ctx context.Context, _ WatchOrders) iter.Seq2[Order, error] {
	return func(yield func(Order, error) bool) {
		for _, o := range h.store.all() {
			fxcqrs.Emit(ctx, OrderViewed{ID: o.ID})
			if !yield(o, nil) {
				return
			}
		}
	}
}

// reserveStock marks an order reserved. Its work is a hook so a test can
// hold it to observe graceful shutdown.
type reserveStock struct {
	store *Store
	work  ReserveWork
}

// ReserveWork is the slow part of reserving stock.
type ReserveWork func(ctx context.Context, id int)

func (h reserveStock) Handle(ctx context.Context, e OrderPlaced) error {
	h.work(ctx, e.ID)
	o, _ := h.store.get(e.ID)
	o.Status = "reserved"
	h.store.put(o)
	return nil
}

type countViews struct{ store *Store }

func (h countViews) Handle(_ context.Context, e OrderViewed) error {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	h.store.views[e.ID]++
	return nil
}

// HTTP.

var errNotFound = errors.New("order not found")

type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

type api struct {
	m     *fxcqrs.Mediator
	store *Store
}

func (a api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", a.place)
	mux.HandleFunc("GET /orders/{id}", a.get)
	mux.HandleFunc("GET /orders/stream", a.stream)
	return mux
}

func (a api) place(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Item string `json:"item"`
		Qty  int    `json:"qty"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, errBadRequest(err.Error()))
		return
	}
	id := a.store.newID()
	err := fxcqrs.Exec(r.Context(), a.m, PlaceOrder{ID: id, Item: body.Item, Qty: body.Qty})
	var evErr *fxcqrs.EventError
	switch {
	case errors.As(err, &evErr):
		// The order is placed; some follow-up work failed. Say both.
		writeJSON(w, http.StatusCreated, map[string]any{"id": id, "eventErrors": evErr.Error()})
	case err != nil:
		writeError(w, err)
	default:
		writeJSON(w, http.StatusCreated, map[string]any{"id": id})
	}
}

func (a api) get(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, errBadRequest("id must be a number"))
		return
	}
	o, err := fxcqrs.Send[Order](r.Context(), a.m, GetOrder{ID: id})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (a api) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	for o, err := range fxcqrs.Stream[Order](r.Context(), a.m, WatchOrders{}) {
		if err != nil {
			fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
			return
		}
		data, _ := json.Marshal(o)
		fmt.Fprintf(w, "event: order\ndata: %s\n\n", data)
		if flusher != nil {
			flusher.Flush()
		}
	}
	fmt.Fprint(w, "event: end\ndata: {}\n\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var bad errBadRequest
	switch {
	case errors.As(err, &bad):
		status = http.StatusBadRequest
	case errors.Is(err, errNotFound):
		status = http.StatusNotFound
	case errors.Is(err, fxcqrs.ErrStopped):
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// Server is the HTTP server, started and stopped by the fx lifecycle. It
// depends on the mediator, so fx stops it before the mediator: first no
// new requests, then the mediator drains what is in flight.
type Server struct {
	srv  *http.Server
	addr net.Addr
}

// Addr is the address the server listens on, once started.
func (s *Server) Addr() net.Addr { return s.addr }

// Addr configures where the server listens.
type Addr string

func NewServer(lc fx.Lifecycle, addr Addr, m *fxcqrs.Mediator, store *Store, log *zap.Logger) *Server {
	s := &Server{srv: &http.Server{Handler: api{m: m, store: store}.routes()}}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", string(addr))
			if err != nil {
				return err
			}
			s.addr = ln.Addr()
			log.Info("listening", zap.Stringer("addr", s.addr))
			go func() { _ = s.srv.Serve(ln) }()
			return nil
		},
		OnStop: s.srv.Shutdown,
	})
	return s
}

// Options is the whole application, for main and for the test.
func Options(addr Addr, work ReserveWork) fx.Option {
	return fx.Options(
		fxcqrs.Module,
		fx.Supply(addr, work, fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 4}}),
		fx.Provide(NewStore, NewServer, zap.NewExample),
		fxcqrs.AsCommandHandler(func(s *Store) placeOrder { return placeOrder{s} }),
		fxcqrs.AsRequestHandler(func(s *Store) getOrder { return getOrder{s} }),
		fxcqrs.AsStreamHandler(func(s *Store) watchOrders { return watchOrders{s} }),
		fxcqrs.AsEventHandler(func(s *Store, w ReserveWork) reserveStock { return reserveStock{s, w} }),
		fxcqrs.AsEventHandler(func(s *Store) countViews { return countViews{s} }),
		// One log line per call and per event invocation, failures at error level.
		fxcqrs.AsMiddleware(func(log *zap.Logger) fxcqrs.Middleware { return fxcqrs.Logging(log) }),
		fx.Invoke(func(*Server) {}),
	)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	fx.New(Options(Addr(*addr), func(context.Context, int) {})).Run()
}
