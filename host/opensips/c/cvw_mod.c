/*
 * cvw.so for OpenSIPS 3.6: the Call-via-Work policy in OpenSIPS' own workers.
 *
 * Only OpenSIPS' module interface lives here: parameters, the script function, MI
 * commands and the policy-file watcher process. The Rust half (libcvw_kamailio.a, crate
 * host/kamailio, declared in cvw.h) is the same one Kamailio's cvw.so links: the policy
 * runtime, the generations shared by all processes, and the host's one decision path.
 *
 * Unlike Kamailio's module, this one does not apply the decision in C: cvw_decide() gives
 * the script the same JSON document the host's HTTP endpoint gives rest_client, and the
 * script (examples/opensips/cvw-routes.cfg) applies it as before. What goes away is the
 * HTTP round trip, the async suspend/resume and the host process on the call path.
 *
 * Nothing here unwinds or aborts: every Rust call returns a code (panics are caught on
 * the Rust side), and every failure is a return code and a log line.
 */

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../mem/shm_mem.h"
#include "../../pvar.h"
#include "../../route.h"
#include "../../pt.h"
#include "../../mi/mi.h"
#include "../tm/tm_load.h"
#include "../tm/h_table.h"

#include "cvw.h"

static char *_p_policy = NULL;
static char *_p_directory = NULL;
static char *_p_failure_mode = NULL;  /* empty: the runtime default (open) */
static char *_p_work_dir = NULL;
static int _p_deadline_ms = 0;      /* 0: the runtime default */
static int _p_memory_mb = 0;        /* 0: the runtime default */
static int _p_watch = 1;

static struct tm_binds _tmb;

static int mod_init(void);
static int child_init(int rank);
static int w_cvw_decide(struct sip_msg *msg, str *hook, str *params, pv_spec_t *out);
static void cvw_watch_proc(int rank);
static mi_response_t *mi_cvw_status(const mi_params_t *params, struct mi_handler *async_hdl);
static mi_response_t *mi_cvw_swap(const mi_params_t *params, struct mi_handler *async_hdl);
static mi_response_t *mi_cvw_reload(const mi_params_t *params, struct mi_handler *async_hdl);

static const cmd_export_t cmds[] = {
	{"cvw_decide", (cmd_function)w_cvw_decide, {
		{CMD_PARAM_STR, 0, 0},
		{CMD_PARAM_STR, 0, 0},
		{CMD_PARAM_VAR, 0, 0}, {0, 0, 0}},
		REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE},
	{0, 0, {{0, 0, 0}}, 0}
};

static const param_export_t params[] = {
	{"policy", STR_PARAM, &_p_policy},
	{"directory", STR_PARAM, &_p_directory},
	{"failure_mode", STR_PARAM, &_p_failure_mode},
	{"work_dir", STR_PARAM, &_p_work_dir},
	{"deadline_ms", INT_PARAM, &_p_deadline_ms},
	{"memory_mb", INT_PARAM, &_p_memory_mb},
	{"watch", INT_PARAM, &_p_watch},
	{0, 0, 0}
};

static const mi_export_t mi_cmds[] = {
	{"cvw_status", "the policy generation, its time and each process's generation", 0, 0, {
		{mi_cvw_status, {0}},
		{EMPTY_MI_RECIPE}}
	},
	{"cvw_swap", "publishes a policy file (checked first) as the next generation", 0, 0, {
		{mi_cvw_swap, {"policy", 0}},
		{EMPTY_MI_RECIPE}}
	},
	{"cvw_reload", "publishes the current policy file and directory again", 0, 0, {
		{mi_cvw_reload, {0}},
		{EMPTY_MI_RECIPE}}
	},
	{EMPTY_MI_EXPORT}
};

/* The watcher: a process of its own, because checking a changed policy compiles it
 * (seconds), which must not hold up a SIP worker or OpenSIPS' timers. */
static const proc_export_t procs[] = {
	{"CVW watcher", 0, 0, cvw_watch_proc, 1, PROC_FLAG_INITCHILD},
	{0, 0, 0, 0, 0, 0}
};

static const dep_export_t deps = {
	{
		{MOD_TYPE_DEFAULT, "tm", DEP_ABORT},
		{MOD_TYPE_NULL, NULL, 0},
	},
	{
		{NULL, NULL},
	},
};

struct module_exports exports = {
	"cvw",
	MOD_TYPE_DEFAULT,
	MODULE_VERSION,
	DEFAULT_DLFLAGS,
	0,        /* load function */
	&deps,
	cmds,
	0,        /* async functions */
	params,
	0,        /* statistics */
	mi_cmds,
	0,        /* pseudo-variables */
	0,        /* transformations */
	procs,
	0,        /* pre-init */
	mod_init,
	0,        /* response function */
	0,        /* destroy */
	child_init,
	0         /* reload confirm */
};

/* ---------- between C and Rust ---------- */

/* cvw.h's levels are Kamailio's numbers; OpenSIPS counts its own. */
static void cvw_log(cvw_log_level_t level, const char *text, size_t len)
{
	switch(level) {
		case CVW_L_ERR: LM_ERR("%.*s\n", (int)len, text); break;
		case CVW_L_WARN: LM_WARN("%.*s\n", (int)len, text); break;
		case CVW_L_NOTICE: LM_NOTICE("%.*s\n", (int)len, text); break;
		case CVW_L_INFO: LM_INFO("%.*s\n", (int)len, text); break;
		default: LM_DBG("%.*s\n", (int)len, text); break;
	}
}

static cvw_str_t cstr(const char *s, int len)
{
	cvw_str_t r = {s, s ? len : 0};
	return r;
}

static cvw_str_t czstr(const char *s)
{
	return cstr(s, s ? (int)strlen(s) : 0);
}

/* ---------- init ---------- */

static int mod_init(void)
{
	static char work_dir[512];
	cvw_params_t p;
	size_t size;
	char *block;

	if(load_tm_api(&_tmb) != 0) {
		LM_ERR("cvw needs tm: loadmodule \"tm.so\" before cvw.so\n");
		return -1;
	}
	if(_p_work_dir == NULL || *_p_work_dir == 0) {
		snprintf(work_dir, sizeof(work_dir), "/tmp/opensips-cvw-%d", (int)getpid());
		_p_work_dir = work_dir;
	}
	/* Generation number and status slots: atomics, 64-aligned, zeroed, shared by every
	 * process forked after this. */
	size = cvw_rs_shared_size();
	block = shm_malloc(size + 64);
	if(block == NULL) {
		LM_ERR("no shared memory for the cvw generation block (%zu bytes)\n", size);
		return -1;
	}
	memset(block, 0, size + 64);
	block = (char *)(((uintptr_t)block + 63) & ~(uintptr_t)63);

	p.policy = czstr(_p_policy);
	p.directory = czstr(_p_directory);
	p.failure_mode = czstr(_p_failure_mode);
	p.work_dir = czstr(_p_work_dir);
	p.call_log = cstr(NULL, 0);
	p.deadline_ms = _p_deadline_ms;
	p.memory_mb = _p_memory_mb;
	/* Compiles and checks the policy; leaves no thread behind for the fork. */
	if(cvw_rs_mod_init(&p, block, cvw_log) < 0) {
		return -1;
	}
	return 0;
}

static int child_init(int rank)
{
	/* SIP workers make their runtime now, not at their first call. Other processes
	 * (timer, TCP main, the watcher) make one only if they ever need it. */
	if(is_worker_proc(rank) && cvw_rs_child_init(process_no) < 0) {
		return -1;
	}
	return 0;
}

static void cvw_watch_proc(int rank)
{
	if(!_p_watch) {
		for(;;) {
			pause();
		}
	}
	for(;;) {
		sleep(1);
		cvw_rs_watch();
	}
}

/* ---------- the script function ---------- */

/* The request the hook is about: in a reply route the transaction's, else the message's
 * own (in a failure route, tm's copy of the request). */
static int hook_request(struct sip_msg *msg, cvw_str_t *out)
{
	struct cell *t;

	if(route_type == ONREPLY_ROUTE) {
		t = _tmb.t_gett();
		if(t == NULL || t == T_UNDEFINED || t->uas.request == NULL) {
			LM_ERR("cvw_decide in a reply route without its transaction\n");
			return -1;
		}
		*out = cstr(t->uas.request->buf, (int)t->uas.request->len);
		return 0;
	}
	*out = cstr(msg->buf, (int)msg->len);
	return 0;
}

/* cvw_decide(hook, params, $out): the hook's decision as a JSON document in $out. 1, or
 * -1 when there is none (the reason is logged): route without Call via Work. */
static int w_cvw_decide(struct sip_msg *msg, str *hook, str *params, pv_spec_t *out)
{
	cvw_str_t request;
	cvw_str_t doc = {NULL, 0};
	pv_value_t val;

	if(hook_request(msg, &request) < 0) {
		return -1;
	}
	if(cvw_rs_document(cstr(hook->s, hook->len), request, cstr(params->s, params->len), &doc)
			< 0) {
		return -1;
	}
	memset(&val, 0, sizeof(val));
	val.flags = PV_VAL_STR;
	val.rs.s = (char *)doc.s;
	val.rs.len = doc.len;
	if(pv_set_value(msg, out, 0, &val) != 0) {
		LM_ERR("cvw_decide: cannot store the decision in its variable\n");
		return -1;
	}
	return 1;
}

/* ---------- MI ---------- */

/* Collects the lines the Rust side emits into one MI string. */
struct mi_text {
	char buf[8192];
	int len;
};

static void mi_emit(void *ctx, const char *text, size_t len)
{
	struct mi_text *t = ctx;
	int room = (int)sizeof(t->buf) - t->len - 1;
	int n = (int)len < room ? (int)len : room;

	if(n <= 0) {
		return;
	}
	memcpy(t->buf + t->len, text, n);
	t->len += n;
	t->buf[t->len++] = '\n';
}

static mi_response_t *mi_lines(int rc, struct mi_text *t)
{
	while(t->len > 0 && t->buf[t->len - 1] == '\n') {
		t->len--;
	}
	if(rc < 0) {
		return init_mi_error(500, t->buf, t->len);
	}
	return init_mi_result_string(t->buf, t->len);
}

static mi_response_t *mi_cvw_status(const mi_params_t *params, struct mi_handler *async_hdl)
{
	static struct mi_text t;

	t.len = 0;
	return mi_lines(cvw_rs_status(mi_emit, &t), &t);
}

static mi_response_t *mi_cvw_swap(const mi_params_t *params, struct mi_handler *async_hdl)
{
	static struct mi_text t;
	str path;

	if(get_mi_string_param(params, "policy", &path.s, &path.len) < 0) {
		return init_mi_param_error();
	}
	t.len = 0;
	return mi_lines(cvw_rs_swap(cstr(path.s, path.len), mi_emit, &t), &t);
}

static mi_response_t *mi_cvw_reload(const mi_params_t *params, struct mi_handler *async_hdl)
{
	static struct mi_text t;

	t.len = 0;
	return mi_lines(cvw_rs_swap(cstr(NULL, 0), mi_emit, &t), &t);
}
