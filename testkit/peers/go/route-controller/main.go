// route-controller: Kubernetes' own route controller (k8s.io/cloud-provider/controllers/route, the code
// cloud-controller-manager runs), with a cloudprovider.Routes of ours over the Compute Engine API, as
// the GCE provider (k8s.io/cloud-provider-gcp, not served by the module proxy here) implements it: a
// route per Node named CLUSTER-NODEUID, described "k8s-node-route", next hop the Node's instance (looked
// up by name in the zones given, as the provider does), every write followed by polling its global
// operation (operations.get, at most once a second, as the provider's rate limiter allows) until DONE.
// Used by podroutes' tests and benchmarks against the Compute Engine test server (testkit/gce-server.ts);
// it never probes a metadata server: the endpoint, project and token are given.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	// The cloud controller manager's feature gates (the route controller asks for one), as it registers them.
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/controllers/route"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
	_ "k8s.io/controller-manager/pkg/features/register"
	"k8s.io/klog/v2"
)

// The description the GCE provider gives the routes it owns, and lists them by.
const k8sNodeRouteTag = "k8s-node-route"

// The GCE provider waits at least this long between two polls of an operation.
const operationPollInterval = time.Second

type compute struct {
	endpoint string // https://compute.googleapis.com/compute/v1/ or the test server's
	project  string
	network  string
	zones    []string
	token    string
	client   *http.Client
}

type apiError struct {
	Code    int
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("compute: %d %s", e.Code, e.Message) }

func (c *compute) call(ctx context.Context, method, rel string, body any, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+"projects/"+c.project+"/"+rel, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var wrapped struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &wrapped)
		return &apiError{Code: resp.StatusCode, Message: wrapped.Error.Message}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type operation struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  *struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"error"`
	HTTPErrorStatusCode int `json:"httpErrorStatusCode"`
}

// wait polls a global operation until it is DONE, as the provider's operation wrapper does.
func (c *compute) wait(ctx context.Context, op *operation) error {
	for op.Status != "DONE" {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(operationPollInterval):
		}
		if err := c.call(ctx, http.MethodGet, "global/operations/"+op.Name, nil, op); err != nil {
			return err
		}
	}
	if op.Error != nil && len(op.Error.Errors) > 0 {
		return &apiError{Code: op.HTTPErrorStatusCode, Message: op.Error.Errors[0].Code + ": " + op.Error.Errors[0].Message}
	}
	return nil
}

func (c *compute) networkURL() string {
	return c.endpoint + "projects/" + c.project + "/global/networks/" + c.network
}

type computeRoute struct {
	Name            string `json:"name"`
	Description     string `json:"description,omitempty"`
	Network         string `json:"network"`
	DestRange       string `json:"destRange"`
	Priority        int    `json:"priority"`
	NextHopInstance string `json:"nextHopInstance,omitempty"`
}

type routes struct{ c *compute }

// truncateClusterName keeps route names within Compute's 63 characters (26 + "-" + a 36-character UID).
func truncateClusterName(clusterName string) string {
	if len(clusterName) > 26 {
		return clusterName[:26]
	}
	return clusterName
}

func (r *routes) ListRoutes(ctx context.Context, clusterName string) ([]*cloudprovider.Route, error) {
	filter := fmt.Sprintf(`(name eq "%s-.*") (network eq ".*/%s") (description eq "%s")`, truncateClusterName(clusterName), r.c.network, k8sNodeRouteTag)
	var found []*cloudprovider.Route
	token := ""
	for {
		query := url.Values{"filter": {filter}}
		if token != "" {
			query.Set("pageToken", token)
		}
		var page struct {
			Items         []computeRoute `json:"items"`
			NextPageToken string         `json:"nextPageToken"`
		}
		if err := r.c.call(ctx, http.MethodGet, "global/routes?"+query.Encode(), nil, &page); err != nil {
			return nil, err
		}
		for _, item := range page.Items {
			found = append(found, &cloudprovider.Route{Name: item.Name, TargetNode: types.NodeName(path.Base(item.NextHopInstance)), DestinationCIDR: item.DestRange})
		}
		if page.NextPageToken == "" {
			return found, nil
		}
		token = page.NextPageToken
	}
}

// instanceZone finds the zone of the Node's instance (Node name = instance name on Compute Engine).
func (r *routes) instanceZone(ctx context.Context, name string) (string, error) {
	for _, zone := range r.c.zones {
		var instance struct {
			Name string `json:"name"`
		}
		err := r.c.call(ctx, http.MethodGet, "zones/"+zone+"/instances/"+name, nil, &instance)
		var api *apiError
		if errors.As(err, &api) && api.Code == http.StatusNotFound {
			continue
		}
		if err != nil {
			return "", err
		}
		return zone, nil
	}
	return "", cloudprovider.InstanceNotFound
}

func (r *routes) CreateRoute(ctx context.Context, clusterName string, nameHint string, route *cloudprovider.Route) error {
	zone, err := r.instanceZone(ctx, string(route.TargetNode))
	if err != nil {
		return err
	}
	body := computeRoute{
		Name:            truncateClusterName(clusterName) + "-" + nameHint,
		Description:     k8sNodeRouteTag,
		Network:         r.c.networkURL(),
		DestRange:       route.DestinationCIDR,
		Priority:        1000,
		NextHopInstance: fmt.Sprintf("projects/%s/zones/%s/instances/%s", r.c.project, zone, route.TargetNode),
	}
	var op operation
	err = r.c.call(ctx, http.MethodPost, "global/routes", body, &op)
	if err == nil {
		err = r.c.wait(ctx, &op)
	}
	var api *apiError
	if errors.As(err, &api) && api.Code == http.StatusConflict {
		klog.Infof("Route %q already exists.", body.Name)
		return nil
	}
	return err
}

func (r *routes) DeleteRoute(ctx context.Context, clusterName string, route *cloudprovider.Route) error {
	var op operation
	err := r.c.call(ctx, http.MethodDelete, "global/routes/"+route.Name, nil, &op)
	if err == nil {
		err = r.c.wait(ctx, &op)
	}
	var api *apiError
	if errors.As(err, &api) && api.Code == http.StatusNotFound {
		return nil
	}
	return err
}

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the controller's ServiceAccount")
	clusterName := flag.String("cluster-name", "kubernetes", "the cluster's name: the prefix of its routes' names")
	clusterCIDR := flag.String("cluster-cidr", "", "the cluster's pod CIDRs (comma-separated)")
	period := flag.Duration("route-reconciliation-period", 10*time.Second, "how often every route is reconciled (cloud-controller-manager's default)")
	endpoint := flag.String("compute-endpoint", "", "the Compute Engine API's base URL, ending in compute/v1/")
	project := flag.String("project", "", "the Compute Engine project")
	network := flag.String("network", "", "the VPC network the routes are in")
	zones := flag.String("zones", "", "the zones the Nodes' instances are in (comma-separated)")
	tokenFile := flag.String("access-token-file", "", "a file holding the OAuth access token")
	gates := flag.String("feature-gates", "", "Kubernetes feature gates (KEY=true,...)")
	// cloud-controller-manager's own client defaults (its --kube-api-qps and --kube-api-burst), not
	// client-go's 5 and 10: the route controller's condition updates of many Nodes wait on them.
	qps := flag.Float64("kube-api-qps", 20, "requests per second to the API server (cloud-controller-manager's default)")
	burst := flag.Int("kube-api-burst", 30, "burst of requests to the API server (cloud-controller-manager's default)")
	flag.Parse()
	if *clusterCIDR == "" || *endpoint == "" || *project == "" || *network == "" || *zones == "" || *tokenFile == "" {
		klog.Exit("route-controller: --cluster-cidr, --compute-endpoint, --project, --network, --zones and --access-token-file are required")
	}
	if *gates != "" {
		if err := utilfeature.DefaultMutableFeatureGate.Set(*gates); err != nil {
			klog.Exitf("route-controller: --feature-gates: %v", err)
		}
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		klog.Exitf("route-controller: --access-token-file: %v", err)
	}
	var cidrs []*net.IPNet
	for _, text := range strings.Split(*clusterCIDR, ",") {
		_, cidr, err := net.ParseCIDR(strings.TrimSpace(text))
		if err != nil {
			klog.Exitf("route-controller: --cluster-cidr %q: %v", text, err)
		}
		cidrs = append(cidrs, cidr)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Exitf("route-controller: --kubeconfig: %v", err)
	}
	config.UserAgent = "route-controller"
	config.QPS = float32(*qps)
	config.Burst = *burst
	client := kubernetes.NewForConfigOrDie(config)
	c := &compute{endpoint: *endpoint, project: *project, network: *network, zones: strings.Split(*zones, ","), token: strings.TrimSpace(string(token)), client: &http.Client{Timeout: 5 * time.Minute}}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	factory := informers.NewSharedInformerFactory(client, 0)
	controller, err := route.New(&routes{c: c}, client, factory.Core().V1().Nodes(), *clusterName, cidrs)
	if err != nil {
		klog.Exitf("route-controller: %v", err)
	}
	factory.Start(ctx.Done())
	klog.Infof("route-controller: cluster %s, network %s, reconciling every %s", *clusterName, *network, *period)
	controller.Run(ctx, *period, controllersmetrics.NewControllerManagerMetrics("route-controller"))
}
