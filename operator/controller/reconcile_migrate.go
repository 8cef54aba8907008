package controller

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/parleychat/parley/operator/specs"
)

// rememberMigrations marks the regions whose status already records a successful migration
// of the current key; they need no Job, even while the rollout is paused.
func rememberMigrations(p *pass) {
	prev := map[string]string{}
	for _, rs := range p.orig.Status.Regions {
		prev[rs.Name] = rs.Migration
	}
	for _, region := range p.regions {
		key := specs.MigrationKey(p.cc, region)
		p.migration[region.Name] = migrationState{key: key, done: prev[region.Name] == key}
	}
}

// migrationState is one region's migration in this pass.
type migrationState struct {
	key    string // specs.MigrationKey
	done   bool
	job    string // Job name, while it runs or after it failed
	failed string // why the Job failed; "" if it did not
}

// ensureMigration runs `parley migrate` as a Job per region, one region at a time in rollout
// order (schema changes are not made concurrently), and marks a region migrated once the Job
// for the current key succeeded. A region's status remembers its last successful key, so a
// deleted Job is not run again. Finished Jobs of older keys are deleted.
func (r *Reconciler) ensureMigration(ctx context.Context, p *pass) error {
	running := false
	for _, region := range p.regions {
		key := specs.MigrationKey(p.cc, region)
		st := migrationState{key: key}
		if p.migration[region.Name].done { // remembered in status by newPass
			continue
		}
		desired := specs.MigrateJob(p.cc, region)
		st.job = desired.Name
		job := &batchv1.Job{}
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(desired), job)
		switch {
		case apierrors.IsNotFound(err):
			if running {
				break // one migration at a time
			}
			if err := controllerutil.SetControllerReference(p.orig, desired, r.Scheme); err != nil {
				return err
			}
			if err := r.Client.Create(ctx, desired); err != nil {
				return fmt.Errorf("create job %s: %w", desired.Name, err)
			}
			r.event(p.orig, corev1.EventTypeNormal, EventMigrationStarted, "Migrate",
				"region %s: running parley migrate for %s (job %s)", region.Name, p.cc.Spec.Image, desired.Name)
			log.FromContext(ctx).Info("migration started", "region", region.Name, "job", desired.Name)
			running = true
		case err != nil:
			return fmt.Errorf("get job %s: %w", desired.Name, err)
		case jobSucceeded(job):
			st.done = true
			r.event(p.orig, corev1.EventTypeNormal, EventMigrated, "Migrate",
				"region %s: parley migrate succeeded for %s", region.Name, p.cc.Spec.Image)
			if err := r.deleteOldJobs(ctx, p, region.Name, key); err != nil {
				return err
			}
		case jobFailed(job) != "":
			st.failed = jobFailed(job)
			running = true // a failed migration stops the ones after it too
		default:
			running = true
		}
		p.migration[region.Name] = st
	}
	return nil
}

func (r *Reconciler) deleteOldJobs(ctx context.Context, p *pass, region, key string) error {
	var jobs batchv1.JobList
	sel := ownedSelector(p.cc)
	sel[specs.LabelRegion] = region
	sel[specs.LabelComponent] = specs.ComponentMigrate
	if err := r.Client.List(ctx, &jobs, client.InNamespace(p.cc.Namespace), sel); err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		if j.Annotations[specs.AnnotationMigration] == key || (!jobSucceeded(j) && jobFailed(j) == "") {
			continue
		}
		if err := r.Client.Delete(ctx, j, client.PropagationPolicy("Background")); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete job %s: %w", j.Name, err)
		}
	}
	return nil
}

func jobSucceeded(j *batchv1.Job) bool {
	if j.Status.Succeeded > 0 {
		return true
	}
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func jobFailed(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return fmt.Sprintf("job %s failed: %s %s", j.Name, c.Reason, c.Message)
		}
	}
	return ""
}
