/*
 * The Rust half of cvw.so (host/kamailio/src/ffi.rs), as C sees it.
 *
 * Every function returns a code and never unwinds: a panic inside is caught and logged.
 * Strings are Kamailio's str layout ({char *s; int len;}). What cvw_rs_route,
 * cvw_rs_failure and cvw_rs_serial_next write into a cvw_answer_t points into memory
 * the Rust side owns until this process's next call of one of them.
 */
#ifndef CVW_RS_H
#define CVW_RS_H

#include <stddef.h>
#include <stdint.h>

/* The same layout as Kamailio's str. */
typedef struct cvw_str {
	const char *s;
	int len;
} cvw_str_t;

typedef enum cvw_log_level {
	CVW_L_ERR = -1,
	CVW_L_WARN = 0,
	CVW_L_NOTICE = 1,
	CVW_L_INFO = 2,
	CVW_L_DBG = 3
} cvw_log_level_t;

typedef void (*cvw_log_f)(cvw_log_level_t level, const char *text, size_t len);
typedef void (*cvw_emit_f)(void *ctx, const char *text, size_t len);

typedef struct cvw_params {
	cvw_str_t policy;
	cvw_str_t directory;
	cvw_str_t failure_mode;
	cvw_str_t work_dir;
	cvw_str_t call_log;     /* empty: no call log */
	int64_t deadline_ms;
	int64_t memory_mb;
} cvw_params_t;

typedef struct cvw_contact {
	cvw_str_t uri;
	cvw_str_t received;
	cvw_str_t user_agent;
	cvw_str_t instance;
} cvw_contact_t;

typedef struct cvw_branch {
	cvw_str_t label;
	cvw_str_t uri;
	cvw_str_t dst_uri;      /* empty: resolve uri */
	cvw_str_t headers;      /* CRLF-terminated lines of this branch only */
	cvw_str_t from_display;
	cvw_str_t from_uri;
	int has_from;
	unsigned int ring_ms;   /* 0: no ring timeout of its own (CVW-51) */
} cvw_branch_t;

#define CVW_CONTINUE 0
#define CVW_REPLY 1
#define CVW_FORK 2

typedef struct cvw_answer {
	int action;             /* CVW_CONTINUE, CVW_REPLY, CVW_FORK */
	int code;               /* CVW_REPLY */
	cvw_str_t reason;       /* CVW_REPLY; NUL-terminated as well */
	cvw_str_t headers;      /* CVW_REPLY: CRLF-terminated lines */
	int serial;             /* CVW_FORK: one target now, the rest in serial_rest */
	int nbranches;
	const cvw_branch_t *branches;
	cvw_str_t serial_rest;  /* keep with the transaction for cvw_rs_serial_next */
	cvw_str_t call_note;    /* CVW_FORK with a call log: keep for cvw_rs_call_final */
} cvw_answer_t;

/* A branch whose own ring timeout runs (CVW-51). */
typedef struct cvw_ring {
	uint64_t at_ms;         /* CLOCK_MONOTONIC */
	unsigned int hash_index;
	unsigned int label;
	unsigned int branch;
} cvw_ring_t;

/* One branch of a forked call as tm ended it. */
typedef struct cvw_leg {
	cvw_str_t uri;
	int code;               /* 0: no final status */
} cvw_leg_t;

size_t cvw_rs_shared_size(void);
int cvw_rs_mod_init(const cvw_params_t *params, void *shared, cvw_log_f log);
int cvw_rs_child_init(int process_no);
/* >= 0: the answer's action; < 0: no decision (route without Call via Work). */
int cvw_rs_route(cvw_str_t msg, cvw_str_t source, const cvw_contact_t *contacts,
		int ncontacts, cvw_answer_t *out);
int cvw_rs_failure(cvw_str_t request, cvw_str_t reply, int code, cvw_str_t label,
		cvw_answer_t *out);
/* 0: no target left. */
int cvw_rs_serial_next(cvw_str_t rest, cvw_answer_t *out);
/* 1: cancel the branch; -1: let it ring; -2: no decision. */
int cvw_rs_reply(cvw_str_t request, cvw_str_t reply, cvw_str_t label);
int cvw_rs_swap(cvw_str_t path, cvw_emit_f emit, void *ctx);
int cvw_rs_status(cvw_emit_f emit, void *ctx);
int cvw_rs_watch(void);
/* 1 queued; -1 not (full). */
int cvw_rs_ring_start(unsigned int hash_index, unsigned int label, unsigned int branch,
		unsigned int ring_ms);
/* The due ones into out (room for max): how many. The ring-timer process only. */
int cvw_rs_ring_due(cvw_ring_t *out, int max);
/* 0 logged; 1 connected: *partial is the record in progress for cvw_rs_call_ended. */
int cvw_rs_call_final(cvw_str_t note, int final_code, const cvw_leg_t *legs, int nlegs,
		cvw_str_t *partial);
int cvw_rs_call_ended(cvw_str_t partial, cvw_str_t how);

#endif
