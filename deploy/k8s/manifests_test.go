// Package k8s_test validates the Kubernetes manifests offline (no API server): every object
// decodes strictly into the k8s.io/api types (a misspelt or misplaced field fails), and the
// references between objects hold: Service selectors and ports, the StatefulSet's governing
// Service and claim templates, mounted ConfigMaps and Secrets, the paths the container
// arguments name, probes, and the security settings the FROM-scratch image needs.
package k8s_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// kustomization is the subset of kustomize's file this directory uses; decoding it strictly
// catches a key kustomize would not understand the way the file means.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Resources          []string    `json:"resources"`
	ConfigMapGenerator []generator `json:"configMapGenerator"`
	SecretGenerator    []generator `json:"secretGenerator"`
	Images             []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

type generator struct {
	Name  string   `json:"name"`
	Files []string `json:"files"`
}

// report collects problems, so that one run names all of them and the rejection tests can
// run the same checks on broken copies.
type report struct{ errs []string }

func (r *report) errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// manifests holds the decoded objects.
type manifests struct {
	services     []corev1.Service
	statefulSets []appsv1.StatefulSet
	deployments  []appsv1.Deployment
	configMaps   map[string][]string // name → keys
	secrets      map[string][]string
}

// decode strictly decodes the YAML stream b (documents separated by ---) into m.
func (m *manifests) decode(r *report, src string, b []byte) {
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			r.errorf("%s document %d: %v", src, i, err)
			continue
		}
		where := fmt.Sprintf("%s document %d (%s %s)", src, i, tm.APIVersion, tm.Kind)
		var err error
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Service":
			var o corev1.Service
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			m.services = append(m.services, o)
		case "apps/v1 StatefulSet":
			var o appsv1.StatefulSet
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			m.statefulSets = append(m.statefulSets, o)
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			m.deployments = append(m.deployments, o)
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			m.configMaps[o.Name] = append(keys(o.Data), keys(o.BinaryData)...)
		case "v1 Secret":
			var o corev1.Secret
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			m.secrets[o.Name] = append(keys(o.Data), keys(o.StringData)...)
		default:
			r.errorf("%s: a kind this validator does not know: add it here", where)
		}
		if err != nil {
			r.errorf("%s: %v", where, err)
		}
	}
}

func stripComments(doc string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// load reads the kustomization in dir, its resources, and the objects its generators make.
func load(r *report, dir string) (*manifests, kustomization) {
	var k kustomization
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err == nil {
		err = yaml.UnmarshalStrict(b, &k)
	}
	if err != nil {
		r.errorf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		r.errorf("kustomization.yaml: apiVersion/kind %q %q", k.APIVersion, k.Kind)
	}
	m := &manifests{configMaps: map[string][]string{}, secrets: map[string][]string{}}
	for _, res := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, res))
		if err != nil {
			r.errorf("resource %s: %v", res, err)
			continue
		}
		m.decode(r, res, b)
	}
	// The generators' objects: one key per file, named after the file.
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				r.errorf("configMapGenerator %s: %v", g.Name, err)
			}
			m.configMaps[g.Name] = append(m.configMaps[g.Name], filepath.Base(f))
		}
	}
	for _, g := range k.SecretGenerator {
		for _, f := range g.Files {
			// The secret file is made per cluster and never committed: only its name counts.
			m.secrets[g.Name] = append(m.secrets[g.Name], filepath.Base(f))
		}
	}
	return m, k
}

func TestManifests(t *testing.T) {
	for _, e := range validate(".") {
		t.Error(e)
	}
}

// validate checks the kustomization in dir and returns its problems.
func validate(dir string) []string {
	r := &report{}
	m, k := load(r, dir)

	// Every manifest here is applied: a YAML file left out of resources is a mistake.
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		f = filepath.Base(f)
		gen := false
		for _, g := range k.ConfigMapGenerator {
			gen = gen || slices.Contains(g.Files, f)
		}
		if f != "kustomization.yaml" && !gen && !slices.Contains(k.Resources, f) {
			r.errorf("%s is neither a resource nor a generator input of kustomization.yaml", f)
		}
	}
	if len(m.statefulSets) != 1 || len(m.deployments) != 1 {
		r.errorf("want one StatefulSet (coordinator) and one Deployment (workers), have %d and %d", len(m.statefulSets), len(m.deployments))
		return r.errs
	}
	if len(k.Images) != 1 || k.Images[0].Name != "ncsn" {
		r.errorf("kustomization images: want one entry for image \"ncsn\", have %+v", k.Images)
	}

	coord, work := m.statefulSets[0], m.deployments[0]
	if n := coord.Spec.Replicas; n == nil || *n != 1 {
		r.errorf("coordinator replicas %v: checkpoints need exactly one writer", n)
	}
	type workload struct {
		kind, name string
		selector   *metav1.LabelSelector
		pod        corev1.PodTemplateSpec
		claims     []corev1.PersistentVolumeClaim
	}
	loads := []workload{
		{"StatefulSet", coord.Name, coord.Spec.Selector, coord.Spec.Template, coord.Spec.VolumeClaimTemplates},
		{"Deployment", work.Name, work.Spec.Selector, work.Spec.Template, nil},
	}
	for _, w := range loads {
		where := w.kind + " " + w.name
		checkName(r, where, w.name)
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() {
			r.errorf("%s: selector %v: %v", where, w.selector, err)
		} else if !sel.Matches(labels.Set(w.pod.Labels)) {
			r.errorf("%s: selector %v does not match its pod labels %v", where, sel, w.pod.Labels)
		}
		checkPod(r, where, w.pod.Spec, w.claims, m, "ncsn")
	}

	// The StatefulSet's governing Service exists and selects it; every Service selects
	// exactly one workload and its ports name ports of that workload's container.
	if !slices.ContainsFunc(m.services, func(s corev1.Service) bool { return s.Name == coord.Spec.ServiceName }) {
		r.errorf("StatefulSet serviceName %q: no such Service", coord.Spec.ServiceName)
	}
	for _, s := range m.services {
		where := "Service " + s.Name
		checkName(r, where, s.Name)
		var hit []workload
		for _, w := range loads {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				hit = append(hit, w)
			}
		}
		if len(hit) != 1 {
			r.errorf("%s: selector %v matches %d workloads, want 1", where, s.Spec.Selector, len(hit))
			continue
		}
		for _, p := range s.Spec.Ports {
			if !podHasPort(hit[0].pod.Spec, p.TargetPort.String(), p.Protocol) {
				r.errorf("%s port %s: target %s is not a port of %s %s", where, p.Name, p.TargetPort.String(), hit[0].kind, hit[0].name)
			}
		}
	}

	// Workers join the coordinator's Service on its gRPC port.
	join := flagValue(work.Spec.Template.Spec.Containers[0].Args, "--join")
	host, port, _ := strings.Cut(join, ":")
	ok := false
	for _, s := range m.services {
		for _, p := range s.Spec.Ports {
			if s.Name == host && fmt.Sprint(p.Port) == port && podHasPort(coord.Spec.Template.Spec, p.TargetPort.String(), p.Protocol) {
				ok = true
			}
		}
	}
	if !ok {
		r.errorf("workers --join=%s: not a port of a Service in front of the coordinator", join)
	}
	if l := flagValue(coord.Spec.Template.Spec.Containers[0].Args, "--listen"); !strings.HasSuffix(l, ":"+port) {
		r.errorf("coordinator --listen=%s, but workers join port %s", l, port)
	}
	return r.errs
}

func checkName(r *report, where, name string) {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		r.errorf("%s: name %q: %v", where, name, errs)
	}
}

// checkPod checks one pod template against the objects it refers to; image is the image
// its container must name.
func checkPod(r *report, where string, ps corev1.PodSpec, claims []corev1.PersistentVolumeClaim, m *manifests, image string) {
	// The image has no /etc/passwd and its files belong to 65532: say so, and refuse root.
	sc := ps.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		r.errorf("%s: pod must set runAsNonRoot and runAsUser 65532", where)
	}
	if len(ps.Containers) != 1 {
		r.errorf("%s: want one container, have %d", where, len(ps.Containers))
		return
	}
	c := ps.Containers[0]
	if c.Image != image {
		r.errorf("%s: image %q, want %q (kustomization's images entry points \"ncsn\" at a registry)", where, c.Image, image)
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
		c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		r.errorf("%s: container must have a read-only root file system and no privilege escalation", where)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"/ncsn", "health"}) {
			r.errorf("%s: readiness and liveness probes must exec /ncsn health (no shell in the image)", where)
			break
		}
	}
	// /ncsn health probes 127.0.0.1:9090 by default: the node must serve metrics there.
	if mt := flagValue(c.Args, "--metrics"); mt != ":9090" || !podHasPort(ps, "metrics", "") {
		r.errorf("%s: --metrics=%q and a port named metrics on 9090 are what /ncsn health probes", where, mt)
	}
	for _, rl := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		if rl.Memory().IsZero() {
			r.errorf("%s: memory request and limit must be set", where)
		}
	}

	// Volumes: each one is mounted, each mount has a volume or claim template, and the
	// ConfigMaps and Secrets they name exist.
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
				r.errorf("%s: volume %s: no ConfigMap %q", where, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if _, ok := m.secrets[v.Secret.SecretName]; !ok {
				r.errorf("%s: volume %s: no Secret %q", where, v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, cl := range claims {
		if cl.Spec.Resources.Requests.Storage().IsZero() || len(cl.Spec.AccessModes) == 0 {
			r.errorf("%s: claim template %s needs a storage request and access modes", where, cl.Name)
		}
		vols[cl.Name] = corev1.Volume{Name: cl.Name}
	}
	mounted := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		if _, ok := vols[vm.Name]; !ok {
			r.errorf("%s: mount %s: no such volume or claim template", where, vm.Name)
		}
		mounted[vm.Name] = true
	}
	for name := range vols {
		if !mounted[name] {
			r.errorf("%s: volume %s is never mounted", where, name)
		}
	}

	// Paths in the arguments are files the mounts provide.
	fileFlags := map[string]string{"--config": "", "--secret-file": ""}
	for f := range fileFlags {
		p := flagValue(c.Args, f)
		if p == "" {
			continue
		}
		if !mountedFile(c.VolumeMounts, vols, m, p) {
			r.errorf("%s: %s=%s is not a key of a mounted ConfigMap or Secret", where, f, p)
		}
	}
	if flagValue(c.Args, "--secret-file") == "" {
		r.errorf("%s: no --secret-file: the built-in secret is for one host only", where)
	}
	for _, f := range []string{"--out", "--data-root"} {
		if p := flagValue(c.Args, f); p != "" && !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == p }) {
			r.errorf("%s: %s=%s is not a mount point", where, f, p)
		}
	}
	// $(VAR) in arguments expands only from the container's env.
	for _, a := range c.Args {
		for _, ref := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(a, -1) {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == ref[1] }) {
				r.errorf("%s: argument %q uses $(%s), which is not in env", where, a, ref[1])
			}
		}
	}
}

// mountedFile reports whether path is a key of a ConfigMap or Secret mounted at its folder.
func mountedFile(mounts []corev1.VolumeMount, vols map[string]corev1.Volume, m *manifests, path string) bool {
	dir, file := filepath.Split(path)
	for _, vm := range mounts {
		if filepath.Clean(vm.MountPath) != filepath.Clean(dir) {
			continue
		}
		v := vols[vm.Name]
		switch {
		case v.ConfigMap != nil:
			return slices.Contains(m.configMaps[v.ConfigMap.Name], file)
		case v.Secret != nil:
			return slices.Contains(m.secrets[v.Secret.SecretName], file)
		}
	}
	return false
}

// podHasPort reports whether the pod's container has a port with that name or number (and
// protocol, if given).
func podHasPort(ps corev1.PodSpec, target string, proto corev1.Protocol) bool {
	for _, c := range ps.Containers {
		for _, p := range c.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if (p.Name == target || fmt.Sprint(p.ContainerPort) == target) && (proto == "" || proto == pp) {
				return true
			}
		}
	}
	return false
}

// flagValue is the value of --name=value in args ("" if absent).
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// The validator must reject what it claims to: a misspelt field, a Service selecting
// nothing, a mount of a ConfigMap that does not exist.
func TestManifestsRejectBroken(t *testing.T) {
	cases := map[string]struct{ file, old, new, want string }{
		"unknown field":       {"worker.yaml", "readinessProbe:", "readinessProbes:", `unknown field "readinessProbes"`},
		"selector mismatch":   {"coordinator.yaml", "  selector:\n    app.kubernetes.io/name: ncsn\n    app.kubernetes.io/component: coordinator", "  selector:\n    app.kubernetes.io/name: ncsn\n    app.kubernetes.io/component: nobody", "matches 0 workloads"},
		"missing ConfigMap":   {"coordinator.yaml", "name: ncsn-run", "name: ncsn-runs", `no ConfigMap "ncsn-runs"`},
		"secret path":         {"worker.yaml", "--secret-file=/etc/ncsn/secret/secret", "--secret-file=/etc/ncsn/secret/key", "--secret-file=/etc/ncsn/secret/key is not a key"},
		"undefined env":       {"worker.yaml", "--advertise=$(POD_IP):7071", "--advertise=$(MY_IP):7071", "$(MY_IP)"},
		"wrong service port":  {"worker.yaml", "--join=ncsn-coordinator:7070", "--join=ncsn-coordinator:7071", "--join=ncsn-coordinator:7071"},
		"probe without shell": {"worker.yaml", `command: ["/ncsn", "health"]`, `command: ["sh", "-c", "true"]`, "must exec /ncsn health"},
		"unmounted claim":     {"coordinator.yaml", "            - name: checkpoints\n              mountPath: /out\n", "", "checkpoints is never mounted"},
		"two coordinators":    {"coordinator.yaml", "replicas: 1", "replicas: 2", "exactly one writer"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"kustomization.yaml", "coordinator.yaml", "worker.yaml", "run.yaml"} {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if f == c.file {
					if !bytes.Contains(b, []byte(c.old)) {
						t.Fatalf("%s no longer contains %q: update this case", f, c.old)
					}
					b = bytes.Replace(b, []byte(c.old), []byte(c.new), 1)
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			errs := validate(dir)
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, c.want) }) {
				t.Errorf("with %s, want a problem mentioning %q; got %q", name, c.want, errs)
			}
		})
	}
}

// kubectl kustomize renders exactly what kubectl apply -k sends (generated names with
// their hashes, references rewritten); where kubectl is installed, that output must decode
// strictly too.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: the rendered output is not checked (the sources are)")
	}
	dir := t.TempDir()
	for _, f := range []string{"kustomization.yaml", "coordinator.yaml", "worker.yaml", "run.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "secret"), []byte("test-secret\n"), 0o600)
	out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	r := &report{}
	m := &manifests{configMaps: map[string][]string{}, secrets: map[string][]string{}}
	m.decode(r, "kubectl kustomize", out)
	if len(m.services) != 1 || len(m.statefulSets) != 1 || len(m.deployments) != 1 || len(m.configMaps) != 1 || len(m.secrets) != 1 {
		t.Fatalf("rendered: %d services, %d statefulsets, %d deployments, %d configmaps, %d secrets; want one each",
			len(m.services), len(m.statefulSets), len(m.deployments), len(m.configMaps), len(m.secrets))
	}
	// Generated names carry a hash; the pods must refer to those, and to the image the
	// kustomization's images entry names.
	checkPod(r, "rendered StatefulSet", m.statefulSets[0].Spec.Template.Spec, m.statefulSets[0].Spec.VolumeClaimTemplates, m, "ncsn:dev")
	checkPod(r, "rendered Deployment", m.deployments[0].Spec.Template.Spec, nil, m, "ncsn:dev")
	for _, e := range r.errs {
		t.Error(e)
	}
}
