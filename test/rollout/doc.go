// Package rollout runs a ChatCluster on Kubernetes' own controllers with its pods as real
// processes (issue 12): kube-apiserver and etcd (controller-runtime envtest),
// kube-controller-manager (StatefulSet, Job, garbage-collector, disruption, node-lifecycle and taint-eviction
// controllers) and kube-scheduler, all built by hack/envtest.sh from the
// k8s.io/kubernetes module, plus a virtual-kubelet node (github.com/virtual-kubelet/virtual-kubelet
// node and node/nodeutil packages) whose provider, ProcessProvider, runs each pod bound to it as
// local processes. The operator's reconciler runs in-process; its pods run the `parley` binary
// built from this repository, in distributed mode against the Kafka, Cassandra and Redis of
// hack/deps.sh on 127.0.0.1.
//
// # What ProcessProvider emulates
//
//   - A node: registered Ready (virtual-kubelet's node controller, with a Lease), with capacity
//     (64 CPUs, 256 GiB, 1000 pods) and no taints; kube-scheduler binds pods to it. The
//     apiserver's admission adds node.kubernetes.io/not-ready at registration; the real
//     node-lifecycle controller removes it once the node reports Ready.
//   - Pod networking: each pod gets a loopback address of its own, 127.0.X.Y, never reused
//     while the provider lives, reported as status.podIP/podIPs (hostIP 127.0.0.1). Linux routes
//     all of 127.0.0.0/8 to lo, so nothing needs configuring. In place of a network namespace,
//     listen addresses are rewritten: an argument whose value is ":P", "0.0.0.0:P" or "[::]:P",
//     P a declared containerPort, becomes "<podIP>:P", and "127.0.0.1:P" / "localhost:P" in
//     arguments and hooks (the pod talking to itself) becomes "<podIP>:P". Loopback addresses on
//     other ports (the backends on 127.0.0.1) are left alone: they are the host's.
//   - Images: ImageBinary maps an image (any tag, so a new tag of the same image is a new pod
//     template running the same local binary) to a local executable; a container's command[0]
//     (and a hook's) whose base name is the binary's is replaced by it, an empty command runs it.
//     An image with no mapping fails the pod (ProviderFailed), as an image pull error would.
//   - Volumes: emptyDir (a directory per pod), secret and configMap (their keys, or items,
//     written as files with the volume's mode), with subPath; volumeMounts are emulated by
//     rewriting every occurrence of a mountPath in command, args and env values to the
//     volume's host directory (a subPath mount nested in another mount is copied into it).
//   - Environment: virtual-kubelet resolves env and envFrom (literal values, configMapKeyRef,
//     secretKeyRef, fieldRef such as metadata.name or metadata.labels['…'], envFrom configMaps
//     and secrets) before CreatePod; the provider adds HOSTNAME and expands $(VAR) in command
//     and args exactly as the kubelet does ($$ escapes, unknown names are kept verbatim).
//   - Container lifecycle: each container is one process (its own process group), stdout and
//     stderr appended to <dir>/<ns>_<pod>/<container>.log. restartPolicy Always/OnFailure
//     restarts an exited process (backoff 1 s doubling to 10 s, restartCount,
//     lastTerminationState); a pod whose containers have all finished for good ends Succeeded
//     (every exit code 0) or Failed, which is what the Job controller counts.
//   - Readiness: the readinessProbe's httpGet (named or numbered port, path, host = pod IP,
//     initialDelaySeconds, periodSeconds, timeoutSeconds, success/failureThreshold) sets the
//     container's ready flag and the ContainersReady and Ready conditions; without a probe a
//     running container is ready.
//   - Deletion: when the pod gets a deletionTimestamp, each container's preStop exec hook runs
//     (with the container's env, path and address rewriting), then SIGTERM goes to its process
//     group, and SIGKILL when terminationGracePeriodSeconds (counted from the deletion, hook
//     included, at least 2 s after the hook as the kubelet does) has passed; the exit is
//     reported as a terminated container state and a terminal phase, and once that status is
//     stored the provider deletes the pod with grace period 0, as the kubelet's status manager
//     does (virtual-kubelet by itself would leave the pod until its whole grace period is over,
//     so a StatefulSet could not recreate it sooner).
//
// # What it does not emulate
//
// Init, sidecar and ephemeral containers (a pod with init containers fails); liveness and
// startup probes (ignored: a hung process is not restarted); exec and tcpSocket readiness
// probes (treated as always succeeding); httpGet hooks; resource limits, security contexts
// (processes run as the test's user), readOnlyRootFilesystem, image pull (secrets, policy);
// persistent volumes, projected and downward-API volumes; container logs/exec/attach/port-forward
// through the API (the log files are on disk); hostPort, Services' virtual IPs (there is no
// kube-proxy, and no EndpointSlices: the API server refuses loopback endpoint addresses, so tests
// resolve a Service from its selector and pod readiness, see serviceDialer); DNS for
// pod or Service names; pod resize or in-place updates (only labels and annotations change on
// a running pod, and the provider keeps them for its status reports).
package rollout
