/*
 * cvw.so for OpenSIPS 3.6: the Call-via-Work policy in OpenSIPS' own workers.
 *
 * Only OpenSIPS' module interface lives here: parameters, the route functions, MI
 * commands and the policy-file watcher process. The Rust half (libcvw_kamailio.a, crate
 * host/kamailio, declared in cvw.h) is the same one Kamailio's cvw.so links: the policy
 * runtime, the generations shared by all processes, and the host's one decision path.
 *
 * As in Kamailio's module, the decision is applied here, in C: the called user's
 * contacts come from usrloc's API, the fork's targets become the Request-URI and
 * appended branches, and each branch gets its own headers in the branch route. The
 * script keeps what OpenSIPS does best in script (uac's From replacement, tm's ring
 * timers through $bavp and $T_fr_inv_timeout). Building the facts and reading the answer
 * as JSON in script cost more than the policy itself (see host/opensips/README.md).
 *
 * Nothing here unwinds or aborts: every Rust call returns a code (panics are caught on
 * the Rust side), and every failure is a return code and a log line.
 */

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../sr_module.h"
#include "../../dprint.h"
#include "../../dset.h"
#include "../../forward.h"
#include "../../data_lump.h"
#include "../../data_lump_rpl.h"
#include "../../mem/mem.h"
#include "../../mem/shm_mem.h"
#include "../../parser/msg_parser.h"
#include "../../parser/parse_uri.h"
#include "../../pvar.h"
#include "../../route.h"
#include "../../pt.h"
#include "../../usr_avp.h"
#include "../../mi/mi.h"
#include "../tm/tm_load.h"
#include "../tm/h_table.h"
#include "../usrloc/usrloc.h"

#include "cvw.h"

static char *_p_policy = NULL;
static char *_p_directory = NULL;
static char *_p_failure_mode = NULL;  /* empty: the runtime default (open) */
static char *_p_work_dir = NULL;
static char *_p_usrloc_domain = "location";
static int _p_deadline_ms = 0;      /* 0: the runtime default */
static int _p_memory_mb = 0;        /* 0: the runtime default */
static int _p_watch = 1;

static struct tm_binds _tmb;
static usrloc_api_t _ulb;
static udomain_t *_ul_domain = NULL;

/* What the branch route hands the failure route, per branch (tm keeps $bavp with the
 * branch): the label of a labelled branch. */
static pv_spec_t _bavp_label;
/* tm's own per-branch cancel, which its API does not export (see cvw_ring_cancel). */
typedef void (*cancel_uacs_f)(struct cell *t, branch_bm_t cancel_bm);
static cancel_uacs_f _cancel_uacs = NULL;
/* A serial fork's later targets, kept with the transaction for cvw_next(). */
static int _avp_serial = -1;

static int mod_init(void);
static int child_init(int rank);
static int w_cvw_route(struct sip_msg *msg, str *source);
static int w_cvw_branch(struct sip_msg *msg);
static int w_cvw_branch_from(struct sip_msg *msg, pv_spec_t *display, pv_spec_t *uri);
static int w_cvw_reply(struct sip_msg *msg, str *label);
static int w_cvw_next(struct sip_msg *msg);
static int w_cvw_failure(struct sip_msg *msg, str *label);
static void cvw_watch_proc(int rank);
static void cvw_ring_proc(int rank);
static mi_response_t *mi_cvw_status(const mi_params_t *params, struct mi_handler *async_hdl);
static mi_response_t *mi_cvw_swap(const mi_params_t *params, struct mi_handler *async_hdl);
static mi_response_t *mi_cvw_reload(const mi_params_t *params, struct mi_handler *async_hdl);

static const cmd_export_t cmds[] = {
	{"cvw_route", (cmd_function)w_cvw_route, {
		{CMD_PARAM_STR, 0, 0}, {0, 0, 0}},
		REQUEST_ROUTE},
	{"cvw_branch", (cmd_function)w_cvw_branch, {{0, 0, 0}},
		BRANCH_ROUTE},
	{"cvw_branch_from", (cmd_function)w_cvw_branch_from, {
		{CMD_PARAM_VAR, 0, 0},
		{CMD_PARAM_VAR, 0, 0}, {0, 0, 0}},
		BRANCH_ROUTE},
	{"cvw_reply", (cmd_function)w_cvw_reply, {
		{CMD_PARAM_STR, 0, 0}, {0, 0, 0}},
		ONREPLY_ROUTE},
	{"cvw_next", (cmd_function)w_cvw_next, {{0, 0, 0}},
		FAILURE_ROUTE},
	{"cvw_failure", (cmd_function)w_cvw_failure, {
		{CMD_PARAM_STR, 0, 0}, {0, 0, 0}},
		FAILURE_ROUTE},
	{0, 0, {{0, 0, 0}}, 0}
};

static const param_export_t params[] = {
	{"policy", STR_PARAM, &_p_policy},
	{"directory", STR_PARAM, &_p_directory},
	{"failure_mode", STR_PARAM, &_p_failure_mode},
	{"work_dir", STR_PARAM, &_p_work_dir},
	{"usrloc_domain", STR_PARAM, &_p_usrloc_domain},
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
	/* CVW-51: cancels a branch whose own ring timeout expired (see cvw_ring_cancel). */
	{"CVW ring timer", 0, 0, cvw_ring_proc, 1, PROC_FLAG_INITCHILD},
	{0, 0, 0, 0, 0, 0}
};

static const dep_export_t deps = {
	{
		{MOD_TYPE_DEFAULT, "tm", DEP_ABORT},
		/* Without usrloc a fork has no registered contacts, only what the policy adds. */
		{MOD_TYPE_DEFAULT, "usrloc", DEP_WARN},
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

static str kstr(cvw_str_t s)
{
	str r = {(char *)s.s, s.len};
	return r;
}

static int parse_spec(const char *text, pv_spec_t *spec)
{
	str s = {(char *)text, (int)strlen(text)};

	if(pv_parse_spec(&s, spec) == NULL) {
		LM_ERR("cannot parse %s\n", text);
		return -1;
	}
	return 0;
}

/* tm cancels one branch (t_cancel_branch() in a reply route) with cancel_uacs(), which
 * its API does not export and OpenSIPS loads modules without RTLD_GLOBAL: found in tm's
 * own handle. Only the ring timer uses it, as tm's timers would. */
static int find_tm_cancel(void)
{
	struct sr_module *m;

	for(m = modules; m != NULL; m = m->next) {
		if(m->exports != NULL && strcmp(m->exports->name, "tm") == 0 && m->handle != NULL) {
			_cancel_uacs = (cancel_uacs_f)dlsym(m->handle, "cancel_uacs");
			break;
		}
	}
	if(_cancel_uacs == NULL) {
		LM_ERR("cannot find tm's cancel_uacs: is this tm the one of this OpenSIPS build?\n");
		return -1;
	}
	return 0;
}

/* ---------- init ---------- */

static int mod_init(void)
{
	static char work_dir[512];
	str serial = str_init("cvw_serial");
	cvw_params_t p;
	size_t size;
	char *block;

	if(load_tm_api(&_tmb) != 0) {
		LM_ERR("cvw needs tm: loadmodule \"tm.so\" before cvw.so\n");
		return -1;
	}
	if(find_export("ul_bind_usrloc", 0) == NULL) {
		LM_WARN("usrloc is not loaded: forks get no registered contacts\n");
	} else if(load_ul_api(&_ulb) != 0
			  || _ulb.register_udomain(_p_usrloc_domain, &_ul_domain) < 0) {
		LM_ERR("cannot use usrloc domain \"%s\" (modparam(\"cvw\", \"usrloc_domain\"))\n",
				_p_usrloc_domain);
		return -1;
	}
	if(parse_spec("$bavp(cvw_label)", &_bavp_label) < 0
			|| parse_avp_spec(&serial, &_avp_serial) < 0) {
		return -1;
	}
	if(find_tm_cancel() < 0) {
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

/* The ring timeout of one branch (CVW-51). tm arms one ring timer per branch from the
 * transaction's $T_fr_inv_timeout when the branch's provisional reply arrives, but arms it
 * after releasing the reply lock: two branches ringing at once in two workers can swap
 * their values (a client then rang out with the desk's 3 s, seen in CI). So the module keeps the
 * branch's own timeout: the worker queues the branch when it relays it
 * (cvw_rs_ring_start, shared memory without a lock) and this process takes the due ones
 * every CVW_RING_TICK_US and cancels each branch that still rings, alone, as
 * t_cancel_branch() would. A call that ended meanwhile costs a lookup. */
#define CVW_RING_TICK_US 20000
#define CVW_RING_BATCH 256

static void cvw_ring_cancel(const cvw_ring_t *r)
{
	struct cell *t = NULL;

	if(_tmb.t_lookup_ident(&t, r->hash_index, r->label) <= 0 || t == NULL)
		return;
	if(t->uas.status < 200 && (int)r->branch < t->nr_of_outgoings
			&& t->uac[r->branch].last_received < 200)
		_cancel_uacs(t, (branch_bm_t)1 << r->branch);
	_tmb.unref_cell(t);
}

static void cvw_ring_proc(int rank)
{
	cvw_ring_t due[CVW_RING_BATCH];
	int i, n;

	for(;;) {
		usleep(CVW_RING_TICK_US);
		do {
			n = cvw_rs_ring_due(due, CVW_RING_BATCH);
			for(i = 0; i < n; i++)
				cvw_ring_cancel(&due[i]);
		} while(n == CVW_RING_BATCH);
	}
}

/* ---------- the fork this process is relaying ----------
 * Set by cvw_route/cvw_next/cvw_failure and read by cvw_branch during the t_relay that
 * follows in the same process (tm runs the branch route inside t_relay). The branches
 * point into the Rust side's buffers, valid until this process's next decision. */
#define CVW_CALLID_MAX 256
static struct {
	const cvw_branch_t *branches;
	int n;
	int boff;               /* tm branch index of target 0; -1 until the first branch */
	char callid[CVW_CALLID_MAX];
	int callid_len;
} _fork;

/* ---------- carrying out an answer ---------- */

/* The called user's registrations, copied out of usrloc (its lock is not held while the
 * policy runs). Only users of this proxy (its domain or addresses) are registered here. */
#define CVW_MAX_CONTACTS 16
#define CVW_CONTACT_BUF 8192
static int cvw_fetch_contacts(struct sip_msg *msg, cvw_contact_t *out)
{
	static char buf[CVW_CONTACT_BUF];
	int used = 0, n = 0;
	str aor;
	urecord_t *r = NULL;
	ucontact_t *c;
	time_t now = time(NULL);

	if(_ul_domain == NULL || parse_sip_msg_uri(msg) < 0)
		return 0;
	if(check_self(&msg->parsed_uri.host, 0, 0) != 1)
		return 0;
	aor = msg->parsed_uri.user;
	if(aor.len <= 0 || _ulb.use_domain)
		return 0; /* AOR user@domain: not supported by this module yet */
	_ulb.lock_udomain(_ul_domain, &aor);
	if(_ulb.get_urecord(_ul_domain, &aor, &r) == 0 && r != NULL) {
		for(c = r->contacts; c != NULL && n < CVW_MAX_CONTACTS; c = c->next) {
			str *f[4] = {&c->c, &c->received, &c->user_agent, &c->instance};
			cvw_str_t *t[4] = {&out[n].uri, &out[n].received, &out[n].user_agent,
					&out[n].instance};
			int k, need = 0;
			if(!VALID_CONTACT(c, now))
				continue;
			for(k = 0; k < 4; k++)
				need += f[k]->len > 0 ? f[k]->len : 0;
			if(used + need > CVW_CONTACT_BUF)
				break;
			for(k = 0; k < 4; k++) {
				int len = f[k]->len > 0 ? f[k]->len : 0;
				memcpy(buf + used, f[k]->s, len);
				t[k]->s = buf + used;
				t[k]->len = len;
				used += len;
			}
			n++;
		}
		_ulb.release_urecord(r, 0);
	}
	_ulb.unlock_udomain(_ul_domain, &aor);
	return n;
}

/* CRLF-terminated header lines appended to the message (in the branch route: to this
 * branch only). */
static int cvw_append_hf(struct sip_msg *msg, cvw_str_t hdrs)
{
	struct lump *anchor;
	char *s;

	if(hdrs.len <= 0)
		return 0;
	if(parse_headers(msg, HDR_EOH_F, 0) < 0)
		return -1;
	anchor = anchor_lump(msg, msg->unparsed - msg->buf, 0);
	if(anchor == NULL)
		return -1;
	s = pkg_malloc(hdrs.len);
	if(s == NULL) {
		LM_ERR("no pkg memory for %d bytes of headers\n", hdrs.len);
		return -1;
	}
	memcpy(s, hdrs.s, hdrs.len);
	if(insert_new_lump_before(anchor, s, hdrs.len, 0) == NULL) {
		pkg_free(s);
		return -1;
	}
	return 0;
}

/* Keeps a serial fork's later targets with the transaction (empty: forgets them). */
static void cvw_keep_serial_rest(cvw_str_t rest)
{
	int_str val;

	destroy_avps(0, _avp_serial, 1);
	if(rest.len <= 0)
		return;
	val.s = kstr(rest);
	if(add_avp(AVP_VAL_STR, _avp_serial, val) < 0)
		LM_ERR("cannot keep the serial fork's later targets\n");
}

/* Sets the fork's targets: target 0 the Request-URI (tm's first branch of this relay),
 * the others appended in order, so target i becomes tm branch boff + i. */
static int cvw_fork(struct sip_msg *msg, cvw_answer_t *a)
{
	struct msg_branch branch;
	str uri, dst;
	int i;

	if(a->nbranches < 1)
		return -1;
	clear_dset();
	for(i = 1; i < a->nbranches; i++) {
		memset(&branch, 0, sizeof(branch));
		branch.uri = kstr(a->branches[i].uri);
		branch.dst_uri = kstr(a->branches[i].dst_uri);
		branch.q = Q_UNSPECIFIED;
		if(append_msg_branch(&branch) < 0) {
			LM_ERR("cannot append branch %d\n", i);
			return -1;
		}
	}
	uri = kstr(a->branches[0].uri);
	dst = kstr(a->branches[0].dst_uri);
	if(set_ruri(msg, &uri) < 0)
		return -1;
	if(dst.len > 0) {
		if(set_dst_uri(msg, &dst) < 0)
			return -1;
	} else {
		reset_dst_uri(msg);
	}
	if(a->serial)
		cvw_keep_serial_rest(a->serial_rest);
	_fork.branches = a->branches;
	_fork.n = a->nbranches;
	_fork.boff = -1;
	_fork.callid_len = 0;
	if(msg->callid != NULL && msg->callid->body.len < CVW_CALLID_MAX) {
		memcpy(_fork.callid, msg->callid->body.s, msg->callid->body.len);
		_fork.callid_len = msg->callid->body.len;
	}
	return 0;
}

/* A final reply with the policy's headers (the transaction exists: the script made it). */
static int cvw_reply(struct sip_msg *msg, cvw_answer_t *a)
{
	str reason = kstr(a->reason);

	if(a->headers.len > 0
			&& add_lump_rpl(msg, (char *)a->headers.s, a->headers.len, LUMP_RPL_HDR)
					   == NULL) {
		LM_ERR("cannot add the reply's headers\n");
		return -1;
	}
	return _tmb.t_reply(msg, (unsigned int)a->code, &reason) < 0 ? -1 : 0;
}

/* 1 fork set (relay it), 2 replied, -1 continue (route as without Call via Work), -2 no
 * usable decision (the same, logged). */
static int cvw_apply(struct sip_msg *msg, int rc, cvw_answer_t *a)
{
	if(rc < 0)
		return -2;
	switch(a->action) {
		case CVW_FORK:
			return cvw_fork(msg, a) < 0 ? -2 : 1;
		case CVW_REPLY:
			return cvw_reply(msg, a) < 0 ? -2 : 2;
		default:
			return -1;
	}
}

static struct cell *current_transaction(void)
{
	struct cell *t = _tmb.t_gett();

	return (t == NULL || t == T_UNDEFINED || t->uas.request == NULL) ? NULL : t;
}

/* ---------- route functions ---------- */

/* In the request route, with the transaction made (t_newtran): the route hook for an
 * initial INVITE from `source`. 1 fork set (relay it), 2 replied, -1 continue, -2 no
 * decision (logged). */
static int w_cvw_route(struct sip_msg *msg, str *source)
{
	cvw_contact_t contacts[CVW_MAX_CONTACTS];
	cvw_answer_t a;
	cvw_str_t m = {msg->buf, (int)msg->len};
	int n, rc;

	n = cvw_fetch_contacts(msg, contacts);
	rc = cvw_rs_route(m, cstr(source->s, source->len), contacts, n, &a);
	return cvw_apply(msg, rc, &a);
}

/* The fork's branch this branch route runs for, or NULL for a branch of another relay. */
static const cvw_branch_t *current_branch(struct sip_msg *msg)
{
	int index = _tmb.get_branch_index(), k;

	if(_fork.n <= 0 || msg->callid == NULL || msg->callid->body.len != _fork.callid_len
			|| memcmp(msg->callid->body.s, _fork.callid, _fork.callid_len) != 0)
		return NULL;
	if(_fork.boff < 0)
		_fork.boff = index;
	k = index - _fork.boff;
	return (k < 0 || k >= _fork.n) ? NULL : &_fork.branches[k];
}

static int set_str(struct sip_msg *msg, pv_spec_t *spec, cvw_str_t s)
{
	pv_value_t val;

	memset(&val, 0, sizeof(val));
	val.flags = PV_VAL_STR;
	val.rs = kstr(s);
	return pv_set_value(msg, spec, 0, &val);
}

static int is_label(cvw_str_t label, const char *name)
{
	int len = (int)strlen(name);

	return label.len == len && memcmp(label.s, name, len) == 0;
}

/* Queues this branch for the ring timer (CVW-51). */
static int cvw_ring_start(unsigned int ring_ms)
{
	struct cell *t = current_transaction();
	int branch = _tmb.get_branch_index();

	if(t == NULL || branch < 0)
		return -1;
	return cvw_rs_ring_start(t->hash_index, t->label, (unsigned int)branch, ring_ms) < 0
				   ? -1
				   : 0;
}

/* In the branch route: this branch's own headers and ring timeout (CVW-51), and for the
 * failure route its label ($bavp(cvw_label), only for a labelled branch). 2 for the desk
 * branch, 1 for another of the fork's, -1 for a branch that is not the fork's. */
static int w_cvw_branch(struct sip_msg *msg)
{
	const cvw_branch_t *b = current_branch(msg);

	if(b == NULL)
		return -1;
	if(cvw_append_hf(msg, b->headers) < 0)
		LM_ERR("cannot add a branch's headers\n");
	if(b->label.len > 0 && !is_label(b->label, "client")
			&& set_str(msg, &_bavp_label, b->label) != 0)
		LM_ERR("cannot keep a branch's label\n");
	if(b->ring_ms > 0 && cvw_ring_start(b->ring_ms) < 0)
		LM_ERR("cannot give a branch its ring timeout\n");
	return is_label(b->label, "desk") ? 2 : 1;
}

/* In the branch route: 1 with the From this branch shows (display name and URI) in the
 * two variables, for uac_replace_from(); -1 when it keeps the caller's. */
static int w_cvw_branch_from(struct sip_msg *msg, pv_spec_t *display, pv_spec_t *uri)
{
	const cvw_branch_t *b = current_branch(msg);

	if(b == NULL || !b->has_from)
		return -1;
	if(set_str(msg, display, b->from_display) != 0 || set_str(msg, uri, b->from_uri) != 0) {
		LM_ERR("cannot hand over a branch's From\n");
		return -1;
	}
	return 1;
}

/* In the reply route, for a provisional reply of branch `label`: 1 when the policy cancels
 * the branch (the script calls t_cancel_branch()), -1 to let it ring, -2 no decision. */
static int w_cvw_reply(struct sip_msg *msg, str *label)
{
	struct cell *t = current_transaction();
	cvw_str_t reply = {msg->buf, (int)msg->len};
	cvw_str_t req;

	if(t == NULL)
		return -2;
	req = cstr(t->uas.request->buf, (int)t->uas.request->len);
	return cvw_rs_reply(req, reply, cstr(label->s, label->len));
}

/* In the failure route: the next target of a serial fork the policy asked for. 1 when one
 * is set (relay it), -1 when none is left. */
static int w_cvw_next(struct sip_msg *msg)
{
	cvw_answer_t a;
	struct usr_avp *avp;
	int_str val;
	int rc;

	avp = search_first_avp(0, _avp_serial, &val, NULL);
	if(avp == NULL || !(avp->flags & AVP_VAL_STR) || val.s.len <= 0)
		return -1;
	rc = cvw_rs_serial_next(cstr(val.s.s, val.s.len), &a);
	if(rc > 0 && cvw_apply(msg, rc, &a) == 1)
		return 1;
	cvw_keep_serial_rest(cstr(NULL, 0));
	return -1;
}

/* In the failure route: the failure hook, with the reply that ended branch `label`. 1 fork
 * set (relay it), 2 replied, -1 nothing to do (the final reply goes to the caller as it
 * is), -2 no decision. */
static int w_cvw_failure(struct sip_msg *msg, str *label)
{
	struct cell *t = current_transaction();
	cvw_answer_t a;
	cvw_str_t req, rep = {NULL, 0};
	struct sip_msg *reply;
	int b, code, rc;

	if(t == NULL)
		return -2;
	b = _tmb.t_get_picked();
	if(b < 0 || b >= t->nr_of_outgoings)
		return -2;
	reply = t->uac[b].reply;
	if(reply != NULL && reply != FAKED_REPLY)
		rep = cstr(reply->buf, (int)reply->len);
	req = cstr(t->uas.request->buf, (int)t->uas.request->len);
	code = t->uac[b].last_received;
	if(code == 487 && !was_cancelled(t)) {
		/* Nobody cancelled the call: the ring timer cancelled the branch, it rang out (the
		 * policy hears 408, as after tm's own timeout). */
		code = 408;
		rep = cstr(NULL, 0);
	}
	rc = cvw_rs_failure(req, rep, code, cstr(label->s, label->len), &a);
	return cvw_apply(msg, rc, &a);
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
