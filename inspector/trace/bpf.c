/* pageext-inspect trace: the BPF program (bcc), compiled against the traced kernel's headers.
 * See inspector/trace/__init__.py for the design; __MAX_SECTIONS__ and MEM_SECTION_ADDR are
 * replaced by inspector/trace/probes.py before compiling, and MEMORY_NOTIFY_HAS_STATUS_CHANGE_NID
 * is defined (-D) when the kernel's struct memory_notify has that member (probes.py reads
 * the kernel's own include/linux/memory.h: up to v6.16), MEMORY_HAS_PREPARE_ONLINE when it
 * has MEM_PREPARE_ONLINE and MEM_FINISH_OFFLINE (v6.9 to v6.18). */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/mmzone.h>
#include <linux/memory.h>

#define MAX_SECTIONS __MAX_SECTIONS__
enum { EV_NOTIFY_ENTRY = 1, EV_NOTIFY_RETURN, EV_INIT, EV_FREE, EV_INVALIDATE };  /* as in trace.py */

/* Compile-time constants of the traced kernel, read back by user space as
 * the max_entries of these (tiny) arrays. */
BPF_ARRAY(const_section_pages, u8, PAGES_PER_SECTION);
BPF_ARRAY(const_page_size, u8, PAGE_SIZE);

struct event_t {
    u64 ts;
    u32 pid, cpu;
    char comm[TASK_COMM_LEN];
    u32 type;
    s32 nid;              /* resolved node (see nid_of_tid) */
    s64 ret;
    u64 action;           /* notifier action */
    u64 pfn;              /* start pfn */
    u64 nr_pages;
    s32 status_change_nid;
    u32 nr_sections;      /* valid entries in before[]/after[] */
    u64 before[MAX_SECTIONS];   /* mem_section[].page_ext at entry */
    u64 after[MAX_SECTIONS];    /* ... and at return */
};

struct notify_args_t {
    u64 ts, action, pfn, nr_pages;
    s32 status_change_nid, nid;
    u64 before[MAX_SECTIONS];
};

struct init_args_t {
    u64 pfn, before;
    s32 nid;
};

BPF_RINGBUF_OUTPUT(events, 64);
BPF_HASH(notify_args, u32, struct notify_args_t);
BPF_HASH(init_args, u32, struct init_args_t);
BPF_HASH(nid_of_tid, u32, s32);   /* zone node of the online/offline_pages() in progress */
BPF_PERCPU_ARRAY(scratch, struct notify_args_t, 1);

/* The notifier action as trace.py's ACTIONS index (values differ by version). */
static u64 action_index(u64 a)
{
    if (a == MEM_ONLINE) return 1;
    if (a == MEM_GOING_OFFLINE) return 2;
    if (a == MEM_OFFLINE) return 3;
    if (a == MEM_GOING_ONLINE) return 4;
    if (a == MEM_CANCEL_ONLINE) return 5;
    if (a == MEM_CANCEL_OFFLINE) return 6;
#ifdef MEMORY_HAS_PREPARE_ONLINE
    /* v6.9 (c5f1e2d18909) to v6.18 (removed by 300709fbefd1): sent by
     * memory_block_online()/_offline() around online_pages()/offline_pages(). */
    if (a == MEM_PREPARE_ONLINE) return 7;
    if (a == MEM_FINISH_OFFLINE) return 8;
#endif
    return 0x100 + a;
}

/* mem_section[nr].page_ext, through the kallsyms address of mem_section. */
static u64 section_page_ext(u64 nr)
{
    struct mem_section *root = NULL;
    u64 val = 0;
#ifdef CONFIG_SPARSEMEM_EXTREME
    struct mem_section **roots = NULL;   /* mem_section is a pointer to the roots */
    bpf_probe_read_kernel(&roots, sizeof(roots), (void *)MEM_SECTION_ADDR);
    if (!roots)
        return 0;
    bpf_probe_read_kernel(&root, sizeof(root), &roots[SECTION_NR_TO_ROOT(nr)]);
#else
    root = (struct mem_section *)MEM_SECTION_ADDR + SECTION_NR_TO_ROOT(nr) * SECTIONS_PER_ROOT;
#endif
    if (!root)
        return 0;
    bpf_probe_read_kernel(&val, sizeof(val), &root[nr & SECTION_ROOT_MASK].page_ext);
    return val;
}

static void fill(struct event_t *e, u32 type)
{
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->pid = id >> 32;
    e->cpu = bpf_get_smp_processor_id();
    e->type = type;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    u32 tid = id;
    s32 *nid = nid_of_tid.lookup(&tid);
    e->nid = nid ? *nid : -1;
}

/* online_pages()/offline_pages(pfn, nr_pages, zone, group): the node whose
 * tables are made or freed when status_change_nid is NUMA_NO_NODE. */
int hotplug_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct zone *zone = (struct zone *)PT_REGS_PARM3(ctx);
    s32 nid = -1;
    bpf_probe_read_kernel(&nid, sizeof(nid), &zone->node);
    nid_of_tid.update(&tid, &nid);
    return 0;
}

/* 5.10's online_pages(pfn, nr_pages, online_type, nid): the node is the fourth argument. */
int hotplug_entry_nid(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    s32 nid = PT_REGS_PARM4(ctx);
    nid_of_tid.update(&tid, &nid);
    return 0;
}

int hotplug_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    nid_of_tid.delete(&tid);
    return 0;
}

int notify_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid(), zero = 0;
    struct notify_args_t *a = scratch.lookup(&zero);
    struct memory_notify *mn = (struct memory_notify *)PT_REGS_PARM2(ctx);
    if (!a)
        return 0;
    a->ts = bpf_ktime_get_ns();
    a->action = action_index(PT_REGS_PARM1(ctx));
    bpf_probe_read_kernel(&a->pfn, sizeof(a->pfn), &mn->start_pfn);
    bpf_probe_read_kernel(&a->nr_pages, sizeof(a->nr_pages), &mn->nr_pages);
#ifdef MEMORY_NOTIFY_HAS_STATUS_CHANGE_NID
    bpf_probe_read_kernel(&a->status_change_nid, sizeof(s32), &mn->status_change_nid);
#else
    /* v6.17 ("mm,memory_hotplug: drop status_change_nid parameter from
     * memory_notify"): the node moved to struct node_notify; only the zone
     * of online_pages()/offline_pages() tells it here. */
    a->status_change_nid = -1;
#endif
    s32 *nid = nid_of_tid.lookup(&tid);
    a->nid = a->status_change_nid >= 0 ? a->status_change_nid : (nid ? *nid : -1);
    for (int i = 0; i < MAX_SECTIONS; i++)
        a->before[i] = (u64)i * PAGES_PER_SECTION < a->nr_pages ?
                       section_page_ext(pfn_to_section_nr(a->pfn) + i) : 0;
    notify_args.update(&tid, a);

    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    fill(e, EV_NOTIFY_ENTRY);
    e->action = a->action;
    e->pfn = a->pfn;
    events.ringbuf_submit(e, 0);
    return 0;
}

int notify_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct notify_args_t *a = notify_args.lookup(&tid);
    if (!a)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        notify_args.delete(&tid);
        return 0;
    }
    fill(e, EV_NOTIFY_RETURN);
    e->ts = a->ts;        /* the call's time: it comes before its children */
    e->ret = (s32)PT_REGS_RC(ctx);
    e->action = a->action;
    e->pfn = a->pfn;
    e->nr_pages = a->nr_pages;
    e->status_change_nid = a->status_change_nid;
    e->nid = a->nid;
    e->nr_sections = 0;
    for (int i = 0; i < MAX_SECTIONS; i++) {
        e->before[i] = a->before[i];
        e->after[i] = 0;
        if ((u64)i * PAGES_PER_SECTION < a->nr_pages) {
            e->after[i] = section_page_ext(pfn_to_section_nr(a->pfn) + i);
            e->nr_sections = i + 1;
        }
    }
    events.ringbuf_submit(e, 0);
    notify_args.delete(&tid);
    return 0;
}

/* static int init_section_page_ext(unsigned long pfn, int nid) */
int init_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct init_args_t a = {};
    a.pfn = PT_REGS_PARM1(ctx);
    a.nid = PT_REGS_PARM2(ctx);
    a.before = section_page_ext(pfn_to_section_nr(a.pfn));
    init_args.update(&tid, &a);
    return 0;
}

int init_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct init_args_t *a = init_args.lookup(&tid);
    if (!a)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (e) {
        fill(e, EV_INIT);
        e->ret = (s32)PT_REGS_RC(ctx);
        e->pfn = a->pfn;
        e->nid = a->nid;
        e->nr_sections = 1;
        e->before[0] = a->before;
        e->after[0] = section_page_ext(pfn_to_section_nr(a->pfn));
        events.ringbuf_submit(e, 0);
    }
    init_args.delete(&tid);
    return 0;
}

/* static void __free_page_ext(unsigned long pfn) and __invalidate_page_ext(pfn) */
static int pfn_event(struct pt_regs *ctx, u32 type)
{
    struct event_t *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    fill(e, type);
    e->pfn = PT_REGS_PARM1(ctx);
    e->nr_sections = 1;
    e->before[0] = section_page_ext(pfn_to_section_nr(e->pfn));
    events.ringbuf_submit(e, 0);
    return 0;
}

int free_entry(struct pt_regs *ctx) { return pfn_event(ctx, EV_FREE); }
int invalidate_entry(struct pt_regs *ctx) { return pfn_event(ctx, EV_INVALIDATE); }
