-- The commerce bureau's registration table as the example adapter reads it.
-- psql "$DATABASE_URL" -f schema.sql
CREATE TABLE IF NOT EXISTS enterprise_registration (
    id               bigserial PRIMARY KEY,
    uscc             text NOT NULL,        -- 统一社会信用代码
    reg_no           text,                 -- 企业注册号
    name             text,                 -- 企业名称
    legal_rep_name   text,                 -- 法定代表人姓名
    legal_rep_id     text,                 -- 法定代表人公民身份号码
    division_code    text,                 -- 行政区划代码
    division_name    text,                 -- 行政区划
    address          text,                 -- 登记住所
    ent_type         text,                 -- 企业类型
    industry         text,                 -- 行业
    established      date,                 -- 成立日期
    authority        text,                 -- 登记机关
    deleted          boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS enterprise_registration_keyset ON enterprise_registration (updated_at, id);

INSERT INTO enterprise_registration (uscc, reg_no, name, legal_rep_name, legal_rep_id, division_code, division_name,
    address, ent_type, industry, established, authority, updated_at)
SELECT * FROM (VALUES
  ('91440106MA59C0XK09', '440106000123456', '广州天河示例科技有限公司', '张伟', '440106198001010019', '440106', '广州市天河区',
   '广州市天河区天河路1号', '有限责任公司', '软件和信息技术服务业', DATE '2016-03-01', '广州市天河区市场监督管理局', TIMESTAMPTZ '2016-05-17 09:30:00+08'),
  ('91440104MA59D1YL15', '440104000654321', '广州越秀示例贸易有限公司', '王芳', '440104198503150027', '440104', '广州市越秀区',
   '广州市越秀区北京路2号', '有限责任公司', '批发业', DATE '2015-11-20', '广州市越秀区市场监督管理局', TIMESTAMPTZ '2016-05-17 09:31:00+08')
) AS v
WHERE NOT EXISTS (SELECT 1 FROM enterprise_registration);
