package fxbus_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// The tenant examples' messages.
type (
	// InvoiceIssued is an event of a tenant's work.
	InvoiceIssued struct{ Number int }
	// IssueInvoice is a command of a tenant's work.
	IssueInvoice struct{ Number int }
)

type issueInvoice struct{}

func (issueInvoice) Handle(ctx context.Context, c IssueInvoice) error {
	fxcqrs.Emit(ctx, InvoiceIssued(c))
	return nil
}

// snippet:handler

// mailInvoice mails an issued invoice, from the tenant's own account.
type mailInvoice struct{ mailed chan<- string }

func (h mailInvoice) Handle(ctx context.Context, e InvoiceIssued) error {
	tenant := fxbus.TenantOf(ctx) // "" is the default tenant
	h.mailed <- fmt.Sprintf("invoice %d mailed for %s", e.Number, tenant)
	return nil
}

// end snippet

// An invoicing service sets the tenant at the edge; the mailing service's
// subscription hands the tenant each message names to its Tenants, and
// its handler reads the tenant it resolved. A message that names a tenant
// the mailing service does not know goes to the dead letters, unhandled.
func ExampleWithTenant() {
	ctx := context.Background()
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	defer broker.Close()

	// The mailing service.
	mailed := make(chan string, 2)
	// snippet:config
	cfg := fxbus.Config{
		Publisher: broker, Subscriber: broker,
		Tenants: fxbus.StaticTenants("acme", "globex"), // or fxbus.TenantsFunc: a lookup
	}
	// end snippet
	mailing, err := fxbus.New(cfg, nil, []fxbus.Subscription{fxbus.NewSubscription[InvoiceIssued]("example-invoices")})
	if err != nil {
		panic(err)
	}
	mailingMediator, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(mailing),
		fxcqrs.WithEventHandlers(mailInvoice{mailed: mailed}))
	dead, _ := broker.Subscribe(ctx, "example-invoices_poison")
	if err := mailing.Start(ctx, mailingMediator); err != nil {
		panic(err)
	}
	defer func() { _ = mailing.Stop(ctx); _ = mailingMediator.Stop(ctx) }()

	// The invoicing service.
	invoicing, err := fxbus.New(fxbus.Config{Publisher: broker},
		[]fxbus.Routing{fxbus.NewRoute[InvoiceIssued]("example-invoices")}, nil)
	if err != nil {
		panic(err)
	}
	m, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(invoicing), fxcqrs.WithCommandHandlers(issueInvoice{}))
	defer func() { _ = m.Stop(ctx) }()

	// snippet:edge
	ctx = fxbus.WithTenant(ctx, "acme") // from the caller's authentication
	err = fxcqrs.Exec(ctx, m, IssueInvoice{Number: 7})
	// end snippet
	if err != nil {
		panic(err)
	}
	fmt.Println(<-mailed)

	// Someone publishes to the topic with a tenant of their own making.
	forged := message.NewMessage(watermill.NewUUID(), []byte(`{"Number":8}`))
	forged.Metadata.Set(fxbus.MetadataName, "InvoiceIssued")
	forged.Metadata.Set(fxbus.MetadataTenant, `acme"; DROP SCHEMA acme; --`)
	if err := broker.Publish("example-invoices", forged); err != nil {
		panic(err)
	}
	letter := <-dead
	letter.Ack()
	fmt.Println("dead letter:", letter.Metadata.Get(middleware.ReasonForPoisonedKey))
	// Output:
	// invoice 7 mailed for acme
	// dead letter: unknown tenant "acme\"; DROP SCHEMA acme; --": not one of the 2 known
}

// An HTTP service sets each request's tenant from its host name, resolved
// by the same Tenants a subscription uses: a host of no known tenant is
// refused before the handler runs.
func ExampleTenantHandler() {
	// snippet:http
	tenants := fxbus.StaticTenants("acme", "globex")
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "serving %s", fxbus.TenantOf(r.Context()))
	})
	byHost := func(r *http.Request) string { // acme.example.com: acme
		tenant, _, _ := strings.Cut(r.Host, ".")
		return tenant
	}
	handler := fxbus.TenantHandler(tenants, byHost, api)
	// end snippet
	for _, host := range []string{"acme.example.com", "initech.example.com"} {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://"+host+"/invoices", nil))
		fmt.Println(host, w.Code, strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// acme.example.com 200 serving acme
	// initech.example.com 403 unknown tenant
}
