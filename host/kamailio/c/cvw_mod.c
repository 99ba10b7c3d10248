/*
 * cvw.so: Call via Work inside Kamailio's own workers.
 *
 * This file is only the module interface: parameters, the route functions and their KEMI
 * twins, RPC, and carrying out an answer with Kamailio's C API (branches, per-branch
 * headers and From, replies). The policy runtime, the decision and every check on what a
 * policy answered are in Rust (host/kamailio/src, declared in cvw.h). Nothing here
 * aborts: every failure is a return code and a log line, and the script then routes the
 * call as without Call via Work.
 *
 * Documentation for operators: README.md beside this file.
 */

#include <string.h>
#include <stdio.h>
#include <time.h>

#include "../../core/sr_module.h"
#include "../../core/dprint.h"
#include "../../core/mod_fix.h"
#include "../../core/kemi.h"
#include "../../core/dset.h"
#include "../../core/data_lump.h"
#include "../../core/data_lump_rpl.h"
#include "../../core/usr_avp.h"
#include "../../core/forward.h"
#include "../../core/globals.h"
#include "../../core/pt.h"
#include "../../core/rpc.h"
#include "../../core/rpc_lookup.h"
#include "../../core/timer_proc.h"
#include "../../core/mem/shm_mem.h"
#include "../../core/parser/parse_uri.h"
#include "../../core/parser/msg_parser.h"
#include "../../modules/tm/tm_load.h"
#include "../../modules/uac/api.h"
#include "../../modules/usrloc/usrloc.h"
#include "../../modules/dialog/dlg_load.h"

#include "cvw.h"

MODULE_VERSION

/* ---------- parameters ---------- */
static str _p_policy = STR_NULL;
static str _p_directory = STR_NULL;
static str _p_failure_mode = STR_NULL;
static str _p_work_dir = STR_NULL;
static str _p_call_log = STR_NULL;
static str _p_usrloc_domain = str_init("location");
static int _p_deadline_ms = 0;
static int _p_memory_mb = 0;
static int _p_watch = 1;
/* CVW-51: "timer" cancels a branch at its own ring timeout from a timer of this module;
 * "second_pass" sends it once more through the proxy, as a transaction of its own. */
static str _p_ring_timeout = str_init("timer");
static int _ring_by_timer = 1;

static param_export_t params[] = {
	{"policy", PARAM_STR, &_p_policy},
	{"directory", PARAM_STR, &_p_directory},
	{"failure_mode", PARAM_STR, &_p_failure_mode},
	{"work_dir", PARAM_STR, &_p_work_dir},
	{"call_log", PARAM_STR, &_p_call_log},
	{"usrloc_domain", PARAM_STR, &_p_usrloc_domain},
	{"deadline_ms", PARAM_INT, &_p_deadline_ms},
	{"memory_mb", PARAM_INT, &_p_memory_mb},
	{"watch", PARAM_INT, &_p_watch},
	{"ring_timeout", PARAM_STR, &_p_ring_timeout},
	{0, 0, 0}
};

/* ---------- other modules' APIs ---------- */
static struct tm_binds _tmb;
static uac_api_t _uacb;        /* optional: a branch's own From */
static usrloc_api_t _ulb;      /* optional: the called user's contacts */
static udomain_t *_ul_domain = NULL;
static struct dlg_binds _dlgb; /* optional: when a connected call ends (call log) */
static int _dlg_loaded = 0;

/* ---------- the fork this process is relaying ----------
 * Set by cvw_route/cvw_failure and read by cvw_branch during the t_relay that follows in
 * the same process (tm runs branch_route inside t_relay). The branches point into the
 * Rust side's buffers, valid until this process's next decision. */
#define CVW_CALLID_MAX 256
static struct {
	const cvw_branch_t *branches;
	int n;
	int boff;               /* tm branch index of branch 0; -1 until the first one */
	char callid[CVW_CALLID_MAX];
	int callid_len;
} _fork;

static str _avp_serial = str_init("cvw_serial");

/* ---------- logging from Rust ---------- */
static void cvw_log(cvw_log_level_t level, const char *text, size_t len)
{
	LM_GEN1(level, "%.*s\n", (int)len, text);
}

static cvw_str_t cstr(str *s)
{
	cvw_str_t r = {s ? s->s : NULL, s ? s->len : 0};
	return r;
}

static str kstr(cvw_str_t s)
{
	str r = {(char *)s.s, s.len};
	return r;
}

/* ---------- module init ---------- */
/* How often the ring-timer process looks for due ring timeouts (CVW-51). */
#define CVW_RING_TICK_US 20000
static void cvw_ring_tick(unsigned int uticks, void *param);

static void cvw_watch_timer(unsigned int ticks, void *param)
{
	cvw_rs_watch();
}

static int mod_init(void)
{
	static char work_dir[512];
	cvw_params_t p;
	size_t size;
	char *block;

	if(_p_ring_timeout.len == 5 && strncmp(_p_ring_timeout.s, "timer", 5) == 0) {
		_ring_by_timer = 1;
	} else if(_p_ring_timeout.len == 11
			  && strncmp(_p_ring_timeout.s, "second_pass", 11) == 0) {
		_ring_by_timer = 0;
	} else {
		LM_ERR("modparam(\"cvw\", \"ring_timeout\"): \"%.*s\" is neither \"timer\" nor "
			   "\"second_pass\"\n",
				_p_ring_timeout.len, _p_ring_timeout.s);
		return -1;
	}
	if(load_tm_api(&_tmb) < 0) {
		LM_ERR("cvw needs tm: loadmodule \"tm.so\" before cvw.so\n");
		return -1;
	}
	memset(&_uacb, 0, sizeof(_uacb));
	if(find_export("bind_uac", 1, 0) == NULL || load_uac_api(&_uacb) < 0) {
		LM_INFO("uac not loaded: a branch with its own From keeps the caller's\n");
		memset(&_uacb, 0, sizeof(_uacb));
	}
	memset(&_ulb, 0, sizeof(_ulb));
	{
		bind_usrloc_t bind = (bind_usrloc_t)find_export("ul_bind_usrloc", 1, 0);
		if(bind == NULL || bind(&_ulb) < 0
				|| _ulb.register_udomain(_p_usrloc_domain.s, &_ul_domain) < 0) {
			LM_INFO("usrloc not loaded: the policy sees no registered clients\n");
			_ul_domain = NULL;
		}
	}
	if(_p_call_log.len > 0) {
		if(find_export("load_dlg", 0, 0) != NULL && load_dlg_api(&_dlgb) == 0) {
			_dlg_loaded = 1;
		} else {
			LM_WARN("dialog not loaded: the call log cannot say when connected calls end\n");
		}
	}
	if(_p_work_dir.s == NULL || _p_work_dir.len == 0) {
		snprintf(work_dir, sizeof(work_dir), "%s/cvw",
				runtime_dir ? runtime_dir : "/tmp");
		_p_work_dir.s = work_dir;
		_p_work_dir.len = strlen(work_dir);
	}
	/* Generation number and status slots: atomics, 64-aligned, zeroed. */
	size = cvw_rs_shared_size();
	block = shm_malloc(size + 64);
	if(block == NULL) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(block, 0, size + 64);
	block = (char *)(((uintptr_t)block + 63) & ~(uintptr_t)63);

	p.policy = cstr(&_p_policy);
	p.directory = cstr(&_p_directory);
	p.failure_mode = cstr(&_p_failure_mode);
	p.work_dir = cstr(&_p_work_dir);
	p.call_log = cstr(&_p_call_log);
	p.deadline_ms = _p_deadline_ms;
	p.memory_mb = _p_memory_mb;
	if(cvw_rs_mod_init(&p, block, cvw_log) < 0) {
		return -1;
	}
	if(register_basic_timers(_p_watch ? 2 : 1) < 0) {
		return -1;
	}
	return 0;
}

static int child_init(int rank)
{
	if(rank == PROC_MAIN) {
		if(_p_watch
				&& fork_basic_timer(PROC_TIMER, "CVW WATCHER", 1, cvw_watch_timer, NULL, 1)
						   < 0) {
			LM_ERR("cannot start the policy file watcher\n");
			return -1;
		}
		if(fork_basic_utimer(PROC_TIMER, "CVW RING TIMER", 1, cvw_ring_tick, NULL,
				   CVW_RING_TICK_US)
				< 0) {
			LM_ERR("cannot start the ring timer process\n");
			return -1;
		}
		return 0;
	}
	/* No thread before the fork: the main process never runs the policy. */
	if(rank == PROC_INIT || rank == PROC_MAIN || rank == PROC_TCP_MAIN
			|| rank == PROC_POSTCHILDINIT) {
		return 0;
	}
	/* SIP workers make their runtime now, not at their first call. */
	if(rank > 0 && cvw_rs_child_init(process_no) < 0) {
		return -1;
	}
	return 0;
}

/* ---------- carrying out an answer ---------- */

/* The called user's registrations, copied out of usrloc (its lock is not held while the
 * policy runs). */
#define CVW_MAX_CONTACTS 16
#define CVW_CONTACT_BUF 8192
static int cvw_fetch_contacts(sip_msg_t *msg, cvw_contact_t *out)
{
	static char buf[CVW_CONTACT_BUF];
	int used = 0, n = 0;
	str aor;
	urecord_t *r = NULL;
	ucontact_t *c;
	time_t now = time(NULL);

	if(_ul_domain == NULL || parse_sip_msg_uri(msg) < 0)
		return 0;
	/* Only users of this proxy (its domain or addresses) are registered here. */
	if(check_self(&msg->parsed_uri.host, 0, 0) != 1)
		return 0;
	aor = msg->parsed_uri.user;
	if(aor.len <= 0)
		return 0;
	if(_ulb.use_domain)
		return 0; /* AOR user@domain: not supported by this module yet */
	_ulb.lock_udomain(_ul_domain, &aor);
	if(_ulb.get_urecord(_ul_domain, &aor, &r) == 0 && r != NULL) {
		for(c = r->contacts; c != NULL && n < CVW_MAX_CONTACTS; c = c->next) {
			str *f[4] = {&c->c, &c->received, &c->user_agent, &c->instance};
			cvw_str_t *t[4] = {&out[n].uri, &out[n].received, &out[n].user_agent,
					&out[n].instance};
			int k, need = 0;
			if(c->expires != 0 && c->expires <= now)
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
		_ulb.release_urecord(r);
	}
	_ulb.unlock_udomain(_ul_domain, &aor);
	return n;
}

static int cvw_append_hf(sip_msg_t *msg, cvw_str_t hdrs)
{
	struct lump *anchor;
	char *s;

	if(hdrs.len <= 0)
		return 0;
	if(parse_headers(msg, HDR_EOH_F, 0) < 0)
		return -1;
	anchor = anchor_lump(msg, msg->unparsed - msg->buf, 0, 0);
	if(anchor == NULL)
		return -1;
	s = pkg_malloc(hdrs.len);
	if(s == NULL) {
		PKG_MEM_ERROR;
		return -1;
	}
	memcpy(s, hdrs.s, hdrs.len);
	if(insert_new_lump_before(anchor, s, hdrs.len, 0) == NULL) {
		pkg_free(s);
		return -1;
	}
	return 0;
}

/* Keeps a serial fork's later targets with the transaction, for cvw_failure. */
static void cvw_keep_serial_rest(cvw_str_t rest)
{
	int_str name, val;

	name.s = _avp_serial;
	destroy_avps(AVP_NAME_STR, name, 1);
	if(rest.len <= 0)
		return;
	val.s = kstr(rest);
	if(add_avp(AVP_NAME_STR | AVP_VAL_STR, name, val) < 0)
		LM_ERR("cannot keep the serial fork's later targets\n");
}

/* ---------- the call log (CVW-50) ----------
 * The facts of a forked call (a note from the Rust side) ride with the transaction as a tm
 * callback's parameter; when the final response goes to the caller the record is written,
 * or, for a connected call, handed to the dialog to be written when the call ends. */
/* dialog/dlg_hash.h: a BYE that came from the called side. */
#define CVW_DLG_DIR_UPSTREAM 2

typedef struct cvw_call {
	int done;
	int len;
	char text[];
} cvw_call_t;

static cvw_call_t *cvw_call_new(cvw_str_t text)
{
	cvw_call_t *c = shm_malloc(sizeof(cvw_call_t) + text.len);
	if(c == NULL) {
		SHM_MEM_ERROR;
		return NULL;
	}
	c->done = 0;
	c->len = text.len;
	memcpy(c->text, text.s, text.len);
	return c;
}

static void cvw_call_free(void *p)
{
	if(p)
		shm_free(p);
}

static void cvw_call_end(struct dlg_cell *dlg, int type, struct dlg_cb_params *params)
{
	cvw_call_t *c = params && params->param ? (cvw_call_t *)*params->param : NULL;
	cvw_str_t partial, how;
	const char *text = type == DLGCB_EXPIRED ? "The call timed out (no BYE)."
			: params && params->direction == CVW_DLG_DIR_UPSTREAM ? "The called side hung up."
			: "The caller hung up.";

	if(c == NULL || c->done)
		return;
	c->done = 1;
	partial.s = c->text;
	partial.len = c->len;
	how.s = text;
	how.len = strlen(text);
	cvw_rs_call_ended(partial, how);
}

#define CVW_MAX_LEGS 32
static void cvw_call_out(struct cell *t, int type, struct tmcb_params *ps)
{
	cvw_call_t *c = ps->param ? (cvw_call_t *)*ps->param : NULL;
	cvw_leg_t legs[CVW_MAX_LEGS];
	cvw_str_t note, partial = {NULL, 0};
	struct dlg_cell *dlg;
	cvw_call_t *rec;
	int i, n;

	if(c == NULL || c->done || ps->code < 200)
		return;
	c->done = 1;
	n = t->nr_of_outgoings < CVW_MAX_LEGS ? (int)t->nr_of_outgoings : CVW_MAX_LEGS;
	for(i = 0; i < n; i++) {
		legs[i].uri = cstr(&t->uac[i].uri);
		legs[i].code = t->uac[i].last_received;
	}
	note.s = c->text;
	note.len = c->len;
	if(cvw_rs_call_final(note, ps->code, legs, n, &partial) != 1)
		return;
	dlg = (_dlg_loaded && ps->req) ? _dlgb.get_dlg(ps->req) : NULL;
	rec = dlg ? cvw_call_new(partial) : NULL;
	if(rec && _dlgb.register_dlgcb(dlg, DLGCB_TERMINATED | DLGCB_EXPIRED | DLGCB_FAILED,
					   cvw_call_end, rec, cvw_call_free) == 0) {
		_dlgb.release_dlg(dlg);
		return;
	}
	if(rec)
		shm_free(rec);
	if(dlg)
		_dlgb.release_dlg(dlg);
	{
		const char *text = "(Its end is not tracked: dlg_manage() was not called.)";
		cvw_str_t how = {text, (int)strlen(text)};
		cvw_rs_call_ended(partial, how);
	}
}

static void cvw_call_track(sip_msg_t *msg, cvw_str_t note)
{
	cvw_call_t *c;

	if(note.len <= 0 || !is_route_type(REQUEST_ROUTE))
		return;
	c = cvw_call_new(note);
	if(c == NULL)
		return;
	if(_tmb.register_tmcb(msg, 0, TMCB_RESPONSE_OUT, cvw_call_out, c, cvw_call_free) < 0) {
		LM_ERR("cannot follow the call for the call log\n");
		shm_free(c);
	}
}

/* Sets the fork's branches: target 0 the Request-URI (tm's branch 0 of this relay), the
 * others appended in order, so target i becomes branch boff + i. */
static int cvw_fork(sip_msg_t *msg, cvw_answer_t *a)
{
	int i;
	str uri, dst;

	if(a->nbranches < 1)
		return -1;
	clear_branches();
	for(i = 1; i < a->nbranches; i++) {
		uri = kstr(a->branches[i].uri);
		dst = kstr(a->branches[i].dst_uri);
		if(append_branch(msg, &uri, dst.len > 0 ? &dst : NULL, NULL, Q_UNSPECIFIED,
				   0, NULL, NULL, 0, NULL, NULL)
				< 0) {
			LM_ERR("cannot append branch %d\n", i);
			return -1;
		}
	}
	uri = kstr(a->branches[0].uri);
	dst = kstr(a->branches[0].dst_uri);
	if(rewrite_uri(msg, &uri) < 0)
		return -1;
	if(dst.len > 0) {
		if(set_dst_uri(msg, &dst) < 0)
			return -1;
	} else {
		reset_dst_uri(msg);
	}
	if(a->serial)
		cvw_keep_serial_rest(a->serial_rest);
	cvw_call_track(msg, a->call_note);
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

static int cvw_reply(sip_msg_t *msg, cvw_answer_t *a)
{
	if(a->headers.len > 0
			&& add_lump_rpl(msg, (char *)a->headers.s, a->headers.len, LUMP_RPL_HDR)
					   == NULL) {
		LM_ERR("cannot add the reply's headers\n");
		return -1;
	}
	if(is_route_type(REQUEST_ROUTE) && _tmb.t_newtran(msg) < 0) {
		LM_ERR("cannot create the transaction to reply\n");
		return -1;
	}
	return _tmb.t_reply(msg, (unsigned int)a->code, (char *)a->reason.s) < 0 ? -1 : 0;
}

/* 1 fork set (relay it), 2 replied, -1 continue (route as without Call via Work), -2 no
 * usable decision (the same, logged). */
static int cvw_apply(sip_msg_t *msg, int rc, cvw_answer_t *a)
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

/* ---------- route functions ---------- */

static int ki_cvw_route(sip_msg_t *msg, str *source)
{
	cvw_contact_t contacts[CVW_MAX_CONTACTS];
	cvw_answer_t a;
	cvw_str_t m = {msg->buf, (int)msg->len};
	int n, rc;

	n = cvw_fetch_contacts(msg, contacts);
	rc = cvw_rs_route(m, cstr(source), contacts, n, &a);
	return cvw_apply(msg, rc, &a);
}

static int w_cvw_route(sip_msg_t *msg, char *p1, char *p2)
{
	str source = STR_NULL;

	if(p1 != NULL && fixup_get_svalue(msg, (gparam_t *)p1, &source) < 0) {
		LM_ERR("cvw_route: cannot read the source class\n");
		return -2;
	}
	return ki_cvw_route(msg, &source);
}

/* The second pass of a branch with its own ring timeout (CVW-51): tm keeps one ring timer
 * per transaction, so the branch goes once more through this proxy, where it is a
 * transaction of its own (route TIMED_BRANCH_IN of the example config). */
static int cvw_timed_branch(sip_msg_t *msg, unsigned int ring_ms)
{
	char line[512];
	int len;
	struct socket_info *si = msg->rcv.bind_address;
	str self;

	if(si == NULL)
		return -1;
	len = snprintf(line, sizeof(line), "X-CVW-Ring-Timeout: %u\r\n", ring_ms);
	if(msg->dst_uri.len > 0 && msg->dst_uri.len < 400)
		len += snprintf(line + len, sizeof(line) - len, "X-CVW-Next-Hop: %.*s\r\n",
				msg->dst_uri.len, msg->dst_uri.s);
	if(len <= 0 || len >= (int)sizeof(line))
		return -1;
	if(cvw_append_hf(msg, (cvw_str_t){line, len}) < 0)
		return -1;
	len = snprintf(line, sizeof(line), "sip:%.*s:%.*s", si->address_str.len,
			si->address_str.s, si->port_no_str.len, si->port_no_str.s);
	if(len <= 0 || len >= (int)sizeof(line))
		return -1;
	self.s = line;
	self.len = len;
	return set_dst_uri(msg, &self);
}

/* The ring timeout of one branch (CVW-51) by this module: the worker queues the branch
 * (cvw_rs_ring_start, shared memory without a lock); the module's ring-timer process
 * takes the due ones every CVW_RING_TICK_US and cancels each branch that still rings,
 * alone, as t_cancel_branches("this") would. A call that ended meanwhile costs a lookup. */
#define CVW_RING_BATCH 256

static void cvw_ring_cancel(const cvw_ring_t *r)
{
	struct cell *t = NULL;
	struct cancel_info ci;

	if(_tmb.t_lookup_ident(&t, r->hash_index, r->label) <= 0 || t == NULL)
		return;
	if(t->uas.status < 200 && r->branch < t->nr_of_outgoings
			&& t->uac[r->branch].last_received < 200) {
		init_cancel_info(&ci);
		_tmb.prepare_to_cancel(t, &ci.cancel_bitmap, ~((branch_bm_t)1 << r->branch));
		if(ci.cancel_bitmap)
			_tmb.cancel_uacs(t, &ci, 0);
	}
	_tmb.t_sett(T_UNDEFINED, T_BR_UNDEFINED);
	_tmb.unref_cell(t);
}

static void cvw_ring_tick(unsigned int uticks, void *param)
{
	cvw_ring_t due[CVW_RING_BATCH];
	int i, n;

	do {
		n = cvw_rs_ring_due(due, CVW_RING_BATCH);
		for(i = 0; i < n; i++)
			cvw_ring_cancel(&due[i]);
	} while(n == CVW_RING_BATCH);
}

static int cvw_ring_timer(unsigned int ring_ms, int branch)
{
	struct cell *t = _tmb.t_gett();

	if(t == NULL || t == T_UNDEFINED || branch < 0)
		return -1;
	return cvw_rs_ring_start(t->hash_index, t->label, (unsigned int)branch, ring_ms) < 0
				   ? -1
				   : 0;
}

/* In branch_route: this branch's own headers, From and ring timeout. 2 for the desk
 * branch (the script arms the reply hook for it), 1 for another of the fork's, -1 for a
 * branch that is not the fork's. */
static int ki_cvw_branch(sip_msg_t *msg)
{
	tm_ctx_t *tcx = _tmb.tm_ctx_get();
	const cvw_branch_t *b;
	int k;
	str d, u;

	if(tcx == NULL || _fork.n <= 0 || msg->callid == NULL
			|| msg->callid->body.len != _fork.callid_len
			|| memcmp(msg->callid->body.s, _fork.callid, _fork.callid_len) != 0)
		return -1;
	if(_fork.boff < 0)
		_fork.boff = tcx->branch_index;
	k = tcx->branch_index - _fork.boff;
	if(k < 0 || k >= _fork.n)
		return -1;
	b = &_fork.branches[k];
	if(cvw_append_hf(msg, b->headers) < 0)
		LM_ERR("cannot add branch %d's headers\n", k);
	if(b->has_from) {
		d = kstr(b->from_display);
		u = kstr(b->from_uri);
		if(_uacb.replace_from == NULL || _uacb.replace_from(msg, &d, &u) < 0)
			LM_ERR("cannot set branch %d's From (is uac loaded?)\n", k);
	}
	if(b->ring_ms > 0
			&& (_ring_by_timer ? cvw_ring_timer(b->ring_ms, tcx->branch_index)
							   : cvw_timed_branch(msg, b->ring_ms))
					   < 0)
		LM_ERR("cannot give branch %d its ring timeout\n", k);
	return (b->label.len == 4 && memcmp(b->label.s, "desk", 4) == 0) ? 2 : 1;
}

static int w_cvw_branch(sip_msg_t *msg, char *p1, char *p2)
{
	return ki_cvw_branch(msg);
}

static int cvw_label(sip_msg_t *msg, char *p, str *label)
{
	label->s = NULL;
	label->len = 0;
	return (p != NULL && fixup_get_svalue(msg, (gparam_t *)p, label) < 0) ? -1 : 0;
}

/* In onreply_route, for a provisional reply of branch `label`: 1 when the policy cancels
 * the branch (the script calls t_cancel_branches("this")), -1 to let it ring. */
static int ki_cvw_reply(sip_msg_t *msg, str *label)
{
	struct cell *t = _tmb.t_gett();
	cvw_str_t reply = {msg->buf, (int)msg->len};
	cvw_str_t req;

	if(t == NULL || t == T_UNDEFINED || t->uas.request == NULL)
		return -2;
	req.s = t->uas.request->buf;
	req.len = (int)t->uas.request->len;
	return cvw_rs_reply(req, reply, cstr(label));
}

static int w_cvw_reply(sip_msg_t *msg, char *p1, char *p2)
{
	str label;
	if(cvw_label(msg, p1, &label) < 0)
		return -2;
	return ki_cvw_reply(msg, &label);
}

/* In failure_route: the next target of a serial fork the policy asked for. 1 when one is
 * set (relay it), -1 when none is left. */
static int ki_cvw_next(sip_msg_t *msg)
{
	cvw_answer_t a;
	struct usr_avp *avp;
	int_str name, val;
	int rc;

	name.s = _avp_serial;
	avp = search_first_avp(AVP_NAME_STR, name, &val, 0);
	if(avp == NULL || !(avp->flags & AVP_VAL_STR) || val.s.len <= 0)
		return -1;
	rc = cvw_rs_serial_next(cstr(&val.s), &a);
	if(rc > 0 && cvw_apply(msg, rc, &a) == 1)
		return 1;
	cvw_keep_serial_rest((cvw_str_t){NULL, 0});
	return -1;
}

static int w_cvw_next(sip_msg_t *msg, char *p1, char *p2)
{
	return ki_cvw_next(msg);
}

/* In failure_route: the failure hook, with the reply that ended branch `label`. 1 fork
 * set (relay it), 2 replied, -1 nothing to do (the final reply goes to the caller as it
 * is), -2 no decision. */
static int ki_cvw_failure(sip_msg_t *msg, str *label)
{
	struct cell *t = _tmb.t_gett();
	cvw_answer_t a;
	cvw_str_t req, rep = {NULL, 0};
	int b, code, rc;

	if(t == NULL || t == T_UNDEFINED || t->uas.request == NULL)
		return -2;
	b = _tmb.t_get_picked_branch();
	if(b < 0 || b >= (int)t->nr_of_outgoings)
		return -2;
	code = t->uac[b].last_received;
	if(code == 487 && !(t->flags & T_CANCELED)) {
		/* Nobody cancelled the call: the branch was cancelled by its ring timer, it rang
		 * out (the policy hears 408, as after tm's own timeout). */
		code = 408;
	} else if(t->uac[b].reply != NULL && t->uac[b].reply != FAKED_REPLY) {
		rep.s = t->uac[b].reply->buf;
		rep.len = (int)t->uac[b].reply->len;
	}
	req.s = t->uas.request->buf;
	req.len = (int)t->uas.request->len;
	rc = cvw_rs_failure(req, rep, code, cstr(label), &a);
	return cvw_apply(msg, rc, &a);
}

static int w_cvw_failure(sip_msg_t *msg, char *p1, char *p2)
{
	str label;
	if(cvw_label(msg, p1, &label) < 0)
		return -2;
	return ki_cvw_failure(msg, &label);
}

static cmd_export_t cmds[] = {
	{"cvw_route", (cmd_function)w_cvw_route, 1, fixup_spve_null, fixup_free_spve_null,
		REQUEST_ROUTE},
	{"cvw_branch", (cmd_function)w_cvw_branch, 0, 0, 0, BRANCH_ROUTE},
	{"cvw_reply", (cmd_function)w_cvw_reply, 1, fixup_spve_null, fixup_free_spve_null,
		ONREPLY_ROUTE},
	{"cvw_next", (cmd_function)w_cvw_next, 0, 0, 0, FAILURE_ROUTE},
	{"cvw_failure", (cmd_function)w_cvw_failure, 1, fixup_spve_null,
		fixup_free_spve_null, FAILURE_ROUTE},
	{0, 0, 0, 0, 0, 0}
};

/* ---------- RPC ---------- */
static void cvw_rpc_emit(void *ctx, const char *text, size_t len)
{
	void **c = (void **)ctx;
	rpc_t *rpc = (rpc_t *)c[0];
	rpc->rpl_printf(c[1], "%.*s", (int)len, text);
}

/* A swap's one line: the answer when it worked, the fault's text when it was refused.
 * binrpc drops a fault text much longer than 200 bytes (the log has all of it). */
typedef struct cvw_swap_said {
	char text[200];
	int len;
} cvw_swap_said_t;

static void cvw_rpc_keep(void *ctx, const char *text, size_t len)
{
	cvw_swap_said_t *said = (cvw_swap_said_t *)ctx;
	said->len = len < sizeof(said->text) ? (int)len : (int)sizeof(said->text) - 1;
	memcpy(said->text, text, said->len);
	said->text[said->len] = '\0';
}

static void cvw_rpc_publish(rpc_t *rpc, void *ctx, str *path)
{
	cvw_swap_said_t said = {{0}, 0};

	if(cvw_rs_swap(cstr(path), cvw_rpc_keep, &said) < 0) {
		rpc->fault(ctx, 500, "%s", said.len > 0 ? said.text : "policy refused");
		return;
	}
	rpc->rpl_printf(ctx, "%s", said.text);
}

static void cvw_rpc_swap(rpc_t *rpc, void *ctx)
{
	str path = STR_NULL;

	if(rpc->scan(ctx, "S", &path) < 1) {
		rpc->fault(ctx, 400, "usage: cvw.swap FILE (a policy component)");
		return;
	}
	cvw_rpc_publish(rpc, ctx, &path);
}

static void cvw_rpc_reload(rpc_t *rpc, void *ctx)
{
	cvw_rpc_publish(rpc, ctx, NULL);
}

static void cvw_rpc_status(rpc_t *rpc, void *ctx)
{
	void *c[2] = {rpc, ctx};
	cvw_rs_status(cvw_rpc_emit, c);
}

static const char *cvw_rpc_swap_doc[] = {
	"Publish the policy component FILE: compiled and checked here, then every worker "
	"switches at its next request; refused with the step and reason otherwise.", 0};
static const char *cvw_rpc_reload_doc[] = {
	"Publish the current policy file and the directory again.", 0};
static const char *cvw_rpc_status_doc[] = {
	"The current generation (digest, files) and each process's generation and calls.", 0};

static rpc_export_t rpc_cmds[] = {
	{"cvw.swap", cvw_rpc_swap, cvw_rpc_swap_doc, 0},
	{"cvw.reload", cvw_rpc_reload, cvw_rpc_reload_doc, 0},
	{"cvw.status", cvw_rpc_status, cvw_rpc_status_doc, RET_ARRAY},
	{0, 0, 0, 0}
};

struct module_exports exports = {
	"cvw",
	DEFAULT_DLFLAGS,
	cmds,
	params,
	rpc_cmds,
	0,          /* pseudo-variables */
	0,          /* response function */
	mod_init,
	child_init,
	0           /* destroy */
};

/* ---------- KEMI ---------- */
/* clang-format off */
static sr_kemi_t sr_kemi_cvw_exports[] = {
	{ str_init("cvw"), str_init("cvw_route"),
		SR_KEMIP_INT, ki_cvw_route,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("cvw"), str_init("cvw_branch"),
		SR_KEMIP_INT, ki_cvw_branch,
		{ SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("cvw"), str_init("cvw_reply"),
		SR_KEMIP_INT, ki_cvw_reply,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("cvw"), str_init("cvw_next"),
		SR_KEMIP_INT, ki_cvw_next,
		{ SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("cvw"), str_init("cvw_failure"),
		SR_KEMIP_INT, ki_cvw_failure,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ {0, 0}, {0, 0}, 0, NULL, { 0, 0, 0, 0, 0, 0 } }
};
/* clang-format on */

int mod_register(char *path, int *dlflags, void *p1, void *p2)
{
	sr_kemi_modules_add(sr_kemi_cvw_exports);
	return 0;
}
